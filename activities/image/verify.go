package image

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/remote"
)

// Verification. Only a digest of the disk as the host reads it back decides
// success. There is one read-back: a verifier on the host hashing the disk
// up to offsets it is given. Started before the write, it trails it segment
// by segment; with VerifyAfterWrite, it starts once the write is done and is
// given the whole image at once.

// readBack has v (a new verifier when nil) hash the disk's first
// j.Image.Size bytes and checks the digest.
func readBack(ctx context.Context, client *ssh.Client, j job, disk diskInfo, v *verifier) (string, error) {
	if v == nil {
		var err error
		if v, err = startVerifier(client, j.Disk, disk, j.algo); err != nil {
			return "", err
		}
		defer v.close()
	}
	onDisk, err := v.sum(ctx, j.Image.Size)
	if err != nil {
		return "", err
	}
	if onDisk != j.want {
		return "", checksumError("disk read back", j.algo, j.want, onDisk)
	}
	return onDisk, nil
}

func checksumError(what, algo, want, got string) error {
	msg := fmt.Sprintf("%s: %s mismatch: want %s, got %s", what, algo, want, got)
	return activities.NonRetryable(msg, activities.ErrTypeImageChecksumMismatch, nil, want, got)
}

// verifyScript hashes the disk on the host as the write commits it: each
// line on stdin is an offset up to which the disk is final, and the bytes
// up to it are read back (from the device, not the page cache, where the
// disk allows O_DIRECT) and fed to one running hasher: openssl where
// installed (about three times faster than coreutils' sha256sum).
// Arguments: disk, extra iflag ("" or ",direct"), hasher. The disk helper,
// where installed, does the same with its verify command.
const verifyScript = `d=$1 dflag=$2 hasher=$3
pos=0
while read -r end; do
  n=$((end - pos))
  if [ "$n" -gt 0 ]; then
    dd if="$d" bs=4M skip="$pos" count="$n" iflag=skip_bytes,count_bytes$dflag status=none || { echo "read-back dd failed: $?" >&2; exit 3; }
  fi
  pos=$end
done | $hasher
`

// verifier reads the disk back on the host, up to where it is told.
type verifier struct {
	disk   string
	cmd    string
	sess   *ssh.Session
	stdin  io.WriteCloser
	stdout bytes.Buffer
	stderr bytes.Buffer
	done   chan error
	sent   int64
	failed error
	hexLen int // of the digest
}

func startVerifier(c *ssh.Client, disk string, info diskInfo, algo string) (*verifier, error) {
	dflag := ""
	if info.kind == "block" && info.direct {
		dflag = ",direct"
	}
	hasher := hostHasher(info, algo)
	sess, err := c.NewSession()
	if err != nil {
		return nil, fmt.Errorf("read back disk %s: open ssh session: %w", disk, err)
	}
	v := &verifier{disk: disk, sess: sess, done: make(chan error, 1), hexLen: 2 * newHash(algo).Size()}
	sess.Stdout, sess.Stderr = &v.stdout, &v.stderr
	if v.stdin, err = sess.StdinPipe(); err != nil {
		sess.Close()
		return nil, fmt.Errorf("read back disk %s: %w", disk, err)
	}
	v.cmd = fmt.Sprintf("LC_ALL=C sh -c %s sh %s %s %s", remote.Quote(verifyScript), remote.Quote(disk), remote.Quote(dflag), remote.Quote(hasher))
	if info.helper != "" {
		v.cmd = fmt.Sprintf("%s verify %s %s %s", remote.Quote(info.helper), remote.Quote(disk), info.ioMode(), algo)
	}
	if err := sess.Start(v.cmd); err != nil {
		sess.Close()
		return nil, fmt.Errorf("read back disk %s: %w", disk, err)
	}
	go func() { v.done <- sess.Wait() }()
	return v, nil
}

// advance lets the read-back go up to end. A failure shows in sum.
func (v *verifier) advance(end int64) {
	if v.failed != nil || end <= v.sent {
		return
	}
	if _, err := fmt.Fprintf(v.stdin, "%d\n", end); err != nil {
		v.failed = err
		return
	}
	v.sent = end
}

// sum waits for the read-back of [0, size) and returns its digest.
func (v *verifier) sum(ctx context.Context, size int64) (string, error) {
	v.advance(size)
	v.stdin.Close()
	var err error
	select {
	case err = <-v.done:
	case <-ctx.Done():
		v.sess.Close()
		return "", fmt.Errorf("read back disk %s: %w", v.disk, ctx.Err())
	}
	v.sess.Close()
	stderr := v.stderr.Bytes()
	err = remote.SessionError(v.cmd, err, stderr)
	f := strings.Fields(v.stdout.String())
	if err == nil && v.failed == nil && v.sent == size && len(f) > 0 && len(f[0]) == v.hexLen && !bytes.Contains(stderr, []byte("read-back dd failed")) {
		return strings.ToLower(f[0]), nil
	}
	if err == nil {
		err = v.failed
	}
	if err == nil {
		err = fmt.Errorf("no digest: %s", remote.TailLines(stderr, remote.StderrTailLines))
	}
	return "", fmt.Errorf("read back disk %s: %w", v.disk, err)
}

func (v *verifier) close() { v.sess.Close() }

package image

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities/remote"
)

// writeScript writes its stdin onto the disk with one dd per segment, and
// prints each segment's end once its dd has written it, fsynced and exited
// 0 having read the whole segment. A dd that fails makes the script exit
// with dd's status and message; one that reads short (stdin ended early)
// exit 5. Arguments: disk offset size segment oflag.
//
// One SSH session carries the whole stream: each session costs the host a
// fork, the login shell's start-up and PAM, and with one per segment the
// stream stalled while the next dd came up (on the bench machine, whose
// login shell takes 0.3 s to start, push ran at half the speed).
const writeScript = `d=$1 pos=$2 size=$3 seg=$4 oflag=$5
while [ "$pos" -lt "$size" ]; do
  n=$((size - pos)); if [ "$n" -gt "$seg" ]; then n=$seg; fi
  r=$(dd of="$d" bs=4M seek="$pos" count="$n" iflag=count_bytes,fullblock oflag="$oflag" conv=notrunc,fsync 2>&1) || { e=$?; printf '%s\n' "$r" >&2; exit $e; }
  w=$(printf '%s\n' "$r" | sed -n 's/^\([0-9][0-9]*\) bytes\{0,1\} .*/\1/p' | tail -n 1)
  if [ "${w:-0}" -ne "$n" ]; then echo "short segment at $pos: ${w:-0} of $n bytes" >&2; exit 5; fi
  pos=$((pos + n))
  echo "$pos"
done
`

// writer is the remote script writing the disk from start on.
type writer struct {
	cmd     string
	sess    *ssh.Session
	stdin   io.WriteCloser
	stderr  bytes.Buffer
	commits chan int64 // segment ends as the host reports them; -1 for a line that is not one; closed at the end of stdout
	done    chan error // sess.Wait's result
}

func startWriter(c *ssh.Client, disk string, info diskInfo, start, size, segSize int64) (*writer, error) {
	sess, err := c.NewSession()
	if err != nil {
		return nil, fmt.Errorf("write image at %d: open ssh session: %w", start, err)
	}
	w := &writer{sess: sess, commits: make(chan int64, 16), done: make(chan error, 1)}
	sess.Stderr = &w.stderr
	stdout, err := sess.StdoutPipe()
	if err == nil {
		w.stdin, err = sess.StdinPipe()
	}
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("write image at %d: %w", start, err)
	}
	oflag := "seek_bytes"
	if info.direct {
		// Past the page cache: a good deal faster, and once dd has
		// written a block it is on the device.
		oflag += ",direct"
	}
	cmd := "LC_ALL=C sh -c " + remote.Quote(writeScript) + " sh"
	args := []string{disk, fmt.Sprint(start), fmt.Sprint(size), fmt.Sprint(segSize), oflag}
	if info.helper != "" {
		cmd = remote.Quote(info.helper) + " write"
		args[4] = info.ioMode()
	}
	for _, arg := range args {
		cmd += " " + remote.Quote(arg)
	}
	w.cmd = cmd
	if err := sess.Start(cmd); err != nil {
		sess.Close()
		return nil, fmt.Errorf("write image at %d: start dd: %w", start, err)
	}
	go func() {
		defer close(w.commits)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			n, err := strconv.ParseInt(strings.TrimSpace(sc.Text()), 10, 64)
			if err != nil {
				n = -1
			}
			w.commits <- n
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() { w.done <- sess.Wait() }()
	return w, nil
}

// finish waits for the script and says how it ended; at is where the
// failed segment started.
func (w *writer) finish(ctx context.Context, at int64) error {
	var err error
	select {
	case err = <-w.done:
	case <-ctx.Done():
		return fmt.Errorf("write image at %d: %w", at, ctx.Err())
	}
	w.sess.Close()
	err = remote.SessionError(w.cmd, err, w.stderr.Bytes())
	var ee *remote.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee):
		return ddError(at, ee.Status, ee.StderrTail)
	}
	return fmt.Errorf("write image at %d: %w", at, err) // connection lost: retryable
}

// sentSegment is a segment sent in full, waiting for the host's word.
type sentSegment struct {
	end   int64
	state []byte // hash state at end
}

// push streams the image into one script on the host that writes it with
// a dd per segment. While one segment's dd flushes and exits, the next
// one's data is already on its way.
func (a *Activities) push(ctx context.Context, client *ssh.Client, in WriteInput, disk diskInfo, prev Progress, segSize int64, tr *tracker) (streamed, error) {
	algo, _ := in.Image.Digest()
	h, prev := resumeHash(ctx, in.Host, algo, prev)
	if prev.Offset == in.Image.Size {
		// All written; only the read-back is left.
		st := streamed{from: prev.Offset, format: prev.Format}
		if len(prev.HashState) > 0 {
			st.digest = hex.EncodeToString(h.Sum(nil))
		}
		return st, nil
	}
	src, err := a.openRaw(ctx, in.Image, prev, h)
	if err != nil {
		return streamed{}, err
	}
	defer src.close()
	if src.format == FormatRaw {
		// The read-back on the host is the one hash of a raw image: a
		// second one here would cost the worker a third of its CPU and
		// prove nothing the read-back does not (a wrong image fails it
		// as surely). A compressed image is hashed on the way, for the
		// prefix check of a resumed stream.
		h = nil
	}
	start := time.Now()
	tr.started(src.from, marshalHash(h), src.format)
	var r = src.r
	if a.MaxBytesPerSecond > 0 {
		r = &throttled{Reader: r, ctx: ctx, rate: a.MaxBytesPerSecond, start: start}
	}

	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chunks, free := startProducer(pctx, in.Image, r, h, src.from, segSize)
	s := &sender{ctx: ctx, log: activity.GetLogger(ctx), client: client, in: in, disk: disk, segSize: segSize, tr: tr,
		free: free, pos: src.from, committed: src.from}
	defer s.close()
	digest, err := s.run(chunks)
	if err != nil {
		return streamed{}, err
	}
	return streamed{from: src.from, bytes: s.pos - src.from, sourceBytes: src.source.n, format: src.format, digest: digest, dur: time.Since(start)}, nil
}

// sender sends the producer's chunks into the host's writer, and takes the
// host's word, segment by segment, that they are on the disk.
type sender struct {
	ctx     context.Context
	log     log.Logger
	client  *ssh.Client
	in      WriteInput
	disk    diskInfo
	segSize int64
	tr      *tracker
	free    chan<- []byte // the producer's pool

	w         *writer      // started with the first chunk
	commits   <-chan int64 // w's
	pending   []sentSegment
	pos       int64 // sent up to
	committed int64 // on the disk up to
}

// run sends every chunk, and returns the image's digest once the host has
// committed it all.
func (s *sender) run(chunks <-chan chunk) (string, error) {
	// On a graceful worker stop, the stream ends at the next segment
	// boundary with everything committed and heartbeated, so the next
	// attempt (on another worker) resumes at once instead of waiting for
	// the heartbeat timeout.
	workerStop := activity.GetWorkerStopChannel(s.ctx)
	for {
		var c chunk
		select {
		case c = <-chunks:
		case end, ok := <-s.commits:
			if err := s.commit(end, ok); err != nil {
				return "", err
			}
			continue
		case <-s.ctx.Done():
			return "", s.ctx.Err()
		}
		if err := s.send(c); err != nil {
			return "", err
		}
		if c.segEnd {
			s.pending = append(s.pending, sentSegment{end: s.pos, state: c.state})
			if err := s.pauseIfStopping(workerStop, c); err != nil {
				return "", err
			}
		}
		if c.done {
			if c.err != nil {
				s.keepSent()
				return "", c.err
			}
			return c.digest, s.end()
		}
	}
}

// send writes c's bytes into the host's writer, starting it with the first.
func (s *sender) send(c chunk) error {
	if len(c.buf) > 0 {
		if s.w == nil {
			w, err := startWriter(s.client, s.in.Disk, s.disk, s.pos, s.in.Image.Size, s.segSize)
			if err != nil {
				return err
			}
			s.w, s.commits = w, w.commits
		}
		if _, err := s.w.stdin.Write(c.buf); err != nil {
			// Most likely dd failed (a full disk) or the connection
			// dropped: the script's exit says which.
			return s.fail(fmt.Errorf("write image at %d: %w", s.pos, err))
		}
		s.pos += int64(len(c.buf))
	}
	if c.buf != nil {
		s.free <- c.buf[:cap(c.buf)]
	}
	return nil
}

// pauseIfStopping ends the stream at the segment boundary just sent when
// the worker is stopping, once the host has committed it.
func (s *sender) pauseIfStopping(workerStop <-chan struct{}, c chunk) error {
	select {
	case <-workerStop:
	default:
		return nil
	}
	if c.done {
		return nil // the end: finish instead
	}
	if err := s.drain(); err != nil {
		return err
	}
	s.log.Info("worker stopping: image stream paused at a segment boundary", "host", s.in.Host, "offset", s.pos)
	return temporal.NewApplicationError(
		fmt.Sprintf("worker stopping: %s written up to byte %d; the next attempt resumes there", s.in.Disk, s.pos), ErrTypeWorkerStopping)
}

// accept takes the host's word that a segment is on the disk. It must name
// the oldest segment sent in full: anything else (a segment not yet sent,
// a stray line) and the stream stops.
func (s *sender) accept(end int64) error {
	if len(s.pending) == 0 || end != s.pending[0].end {
		return fmt.Errorf("write image at %d: the host's writer reported %d, out of turn", s.committed, end)
	}
	s.tr.commit(end, s.pending[0].state)
	s.committed = end
	s.pending = s.pending[1:]
	s.log.Debug("segment written", "host", s.in.Host, "offset", end, "total", s.in.Image.Size)
	return nil
}

// commit is accept for a value read from w.commits.
func (s *sender) commit(end int64, ok bool) error {
	if !ok {
		return s.fail(fmt.Errorf("write image at %d: the host's writer ended early", s.committed))
	}
	return s.accept(end)
}

// drain waits until the host has committed every segment sent.
func (s *sender) drain() error {
	for len(s.pending) > 0 {
		select {
		case end, ok := <-s.commits:
			if err := s.commit(end, ok); err != nil {
				return err
			}
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
	}
	return nil
}

// settle commits what the host still reports until its writer ends, so a
// retry resumes as late as it can.
func (s *sender) settle(wctx context.Context) {
	for {
		select {
		case end, ok := <-s.commits:
			if !ok || s.accept(end) != nil {
				return
			}
		case <-wctx.Done():
			return
		}
	}
}

// fail says why the writer stopped, once settled; cause if it says nothing.
func (s *sender) fail(cause error) error {
	wctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	s.settle(wctx)
	if err := s.w.finish(wctx, s.committed); err != nil {
		return err
	}
	return cause
}

// keepSent lets the host commit the segments sent in full before the
// image failed to read: the script ends at the one cut short.
func (s *sender) keepSent() {
	if s.w == nil {
		return
	}
	s.w.stdin.Close()
	wctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	s.settle(wctx)
}

// end closes the writer's input and waits for the last commits and the
// script's exit.
func (s *sender) end() error {
	if s.w != nil {
		s.w.stdin.Close()
		if err := s.drain(); err != nil {
			return err
		}
		if err := s.w.finish(s.ctx, s.committed); err != nil {
			return err
		}
	}
	if s.committed != s.in.Image.Size {
		return fmt.Errorf("write image: committed %d of %d bytes", s.committed, s.in.Image.Size)
	}
	return nil
}

func (s *sender) close() {
	if s.w != nil {
		s.w.sess.Close()
	}
}

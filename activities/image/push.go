package image

import (
	"bufio"
	"bytes"
	"context"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
)

// Push mode moves the image in chunks of chunkSize through a pool of
// poolChunks buffers: one goroutine reads, decompresses and hashes, the
// other encrypts and sends, so on two cores the hash costs no time. The
// worker's memory does not grow with the image.
const (
	chunkSize  = 1 << 20
	poolChunks = 4
)

// rawStream is the raw (decompressed) image from an offset on.
type rawStream struct {
	r      io.Reader
	format string
	from   int64    // raw offset r starts at
	source *counter // bytes read from the image file
	close  func()
}

type counter struct {
	r io.Reader
	n int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// openRaw opens the image for a push that resumes at prev.Offset with h
// holding the hash state of the bytes before it. A raw image is entered at
// the offset. A compressed one is decompressed from its start and the
// prefix discarded; if the prefix no longer hashes to h's state, the image
// changed since the last attempt, and the stream starts over at 0 with h
// reset.
func (a *Activities) openRaw(ctx context.Context, img api.Image, prev Progress, h hash.Hash) (*rawStream, error) {
	log := activity.GetLogger(ctx)
	offset := prev.Offset
	if offset > 0 && (prev.Format == "" || prev.Format == FormatRaw) {
		format, err := a.sniff(ctx, img)
		if err != nil {
			return nil, err
		}
		if format == FormatRaw {
			rc, total, err := a.openSource(ctx, img, offset, -1)
			if err != nil {
				return nil, err
			}
			if total >= 0 {
				if err := checkSize(img, total); err != nil {
					rc.Close()
					return nil, err
				}
			}
			c := &counter{r: rc}
			return &rawStream{r: c, format: FormatRaw, from: offset, source: c, close: func() { rc.Close() }}, nil
		}
		// It was raw and is now compressed: the prefix check below will
		// tell whether it holds the same bytes.
	}

	rc, total, err := a.openSource(ctx, img, 0, -1)
	if err != nil {
		return nil, err
	}
	c := &counter{r: rc}
	br := bufio.NewReaderSize(c, chunkSize)
	head, err := br.Peek(sniffLen)
	if err != nil && err != io.EOF {
		rc.Close()
		return nil, fmt.Errorf("read image: %w", err)
	}
	s := &rawStream{r: br, format: DetectFormat(head), source: c, close: func() { rc.Close() }}
	if s.format == FormatRaw {
		if total >= 0 {
			if err := checkSize(img, total); err != nil {
				s.close()
				return nil, err
			}
		}
		if offset > 0 {
			log.Warn("image was compressed in the previous attempt and is raw now: starting over", "image", img.URL)
			h.Reset()
		}
		return s, nil
	}
	dec, err := newDecoder(s.format, br)
	if err != nil {
		s.close()
		return nil, sourceError(img, 0, err)
	}
	s.r = dec
	s.close = func() { dec.close(); rc.Close() }
	if offset == 0 {
		return s, nil
	}
	// Skip the prefix, hashing it to compare with the saved state.
	fresh := newHash(algoOf(h))
	n, err := io.CopyBuffer(fresh, io.LimitReader(dec, offset), make([]byte, chunkSize))
	if err == nil && n < offset {
		err = io.EOF
	}
	if err != nil {
		s.close()
		return nil, sourceError(img, n, err)
	}
	if !bytes.Equal(marshalHash(fresh), marshalHash(h)) {
		s.close()
		log.Warn("image's first bytes differ from what the previous attempt wrote: starting over", "image", img.URL, "offset", offset)
		h.Reset()
		return a.openRaw(ctx, img, Progress{}, h)
	}
	s.from = offset
	return s, nil
}

// sourceError says why the raw image could not be read at raw offset pos.
func sourceError(img api.Image, pos int64, err error) error {
	switch {
	case err == io.EOF:
		msg := fmt.Sprintf("image %s ended at byte %d, expected %d bytes", img.URL, pos, img.Size)
		return activities.NonRetryable(msg, activities.ErrTypeImageTruncated, nil)
	case errors.Is(err, errCompressedEnd):
		msg := fmt.Sprintf("image %s: compressed data ends early, at raw byte %d of %d", img.URL, pos, img.Size)
		return activities.NonRetryable(msg, activities.ErrTypeImageTruncated, nil)
	case errors.Is(err, errCorrupt):
		msg := fmt.Sprintf("image %s at raw byte %d: %v", img.URL, pos, err)
		return activities.NonRetryable(msg, ErrTypeImageCorrupt, nil)
	}
	return fmt.Errorf("read image at %d: %w", pos, err) // the network: retryable
}

// chunk is what the reader hands the sender.
type chunk struct {
	buf    []byte // raw image bytes; return to the pool when sent
	segEnd bool   // buf ends a segment
	state  []byte // hash state at the segment's end
	done   bool   // the last item
	err    error  // with done: why reading stopped early
	digest string // with done and no err: the whole image's sha256
}

// produce reads [from, size) from r, hashing into h, and hands it out in
// chunks that never straddle a segment boundary. It then makes sure r has
// nothing more to give.
func produce(ctx context.Context, img api.Image, r io.Reader, h hash.Hash, from, segSize int64, free <-chan []byte, out chan<- chunk) {
	send := func(c chunk) bool {
		select {
		case out <- c:
			return true
		case <-ctx.Done():
			return false
		}
	}
	pos := from
	segEnd := min(from+segSize, img.Size)
	atEOF := false
	for pos < img.Size {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			return
		}
		n, err := readFull(r, buf[:min(int64(len(buf)), segEnd-pos)])
		h.Write(buf[:n])
		pos += int64(n)
		c := chunk{buf: buf[:n]}
		if pos == segEnd {
			c.segEnd, c.state = true, marshalHash(h)
			segEnd = min(segEnd+segSize, img.Size)
		}
		if err == io.EOF && pos == img.Size {
			err, atEOF = nil, true
		}
		if err != nil {
			if !send(c) {
				return
			}
			send(chunk{done: true, err: sourceError(img, pos, err)})
			return
		}
		if !send(c) {
			return
		}
	}
	// Past the end, a compressed stream still checks its trailer.
	var one [1]byte
	n, err := 0, error(io.EOF)
	if !atEOF {
		n, err = readFull(r, one[:])
	}
	switch {
	case n > 0:
		msg := fmt.Sprintf("image %s is longer than its declared %d bytes", img.URL, img.Size)
		err = activities.NonRetryable(msg, activities.ErrTypeImageSizeMismatch, nil)
	case err == io.EOF:
		err = nil
	default:
		err = sourceError(img, pos, err)
	}
	send(chunk{done: true, err: err, digest: hex.EncodeToString(h.Sum(nil))})
}

// readFull is io.ReadFull that returns the reader's own error: io.EOF for
// a short read at the end, not io.ErrUnexpectedEOF, which a source that
// promised more (Content-Length) uses for a dropped connection.
func readFull(r io.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := r.Read(p[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

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
	var ee *ssh.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee):
		return ddError(at, ee.ExitStatus(), w.stderr.Bytes())
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
	log := activity.GetLogger(ctx)
	h := newHash(algo)
	if prev.Offset > 0 {
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(prev.HashState); err != nil {
			log.Warn("previous attempt's progress has no usable hash state: starting over", "host", in.Host, "error", err)
			h.Reset()
			prev = Progress{}
		}
	}
	if prev.Offset == in.Image.Size {
		// All written; only the read-back is left.
		return streamed{from: prev.Offset, format: prev.Format, digest: hex.EncodeToString(h.Sum(nil))}, nil
	}
	src, err := a.openRaw(ctx, in.Image, prev, h)
	if err != nil {
		return streamed{}, err
	}
	defer src.close()
	offset := src.from
	start := time.Now()
	tr.started(offset, marshalHash(h), src.format)
	var r = src.r
	if a.MaxBytesPerSecond > 0 {
		r = &throttled{Reader: r, ctx: ctx, rate: a.MaxBytesPerSecond, start: start}
	}

	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	free := make(chan []byte, poolChunks)
	for range poolChunks {
		free <- make([]byte, chunkSize)
	}
	chunks := make(chan chunk, poolChunks)
	go produce(pctx, in.Image, r, h, offset, segSize, free, chunks)

	var w *writer
	var commits <-chan int64 // w's, once started
	defer func() {
		if w != nil {
			w.sess.Close()
		}
	}()
	var pending []sentSegment
	committed := offset
	// commit takes the host's word that a segment is on the disk. It must
	// name the oldest segment sent in full: anything else (a segment not
	// yet sent, a stray line) and the stream stops.
	accept := func(end int64) error {
		if len(pending) == 0 || end != pending[0].end {
			return fmt.Errorf("write image at %d: the host's writer reported %d, out of turn", committed, end)
		}
		tr.commit(end, pending[0].state)
		committed = end
		pending = pending[1:]
		log.Debug("segment written", "host", in.Host, "offset", end, "total", in.Image.Size)
		return nil
	}
	// settle commits what the host still reports until its writer ends,
	// so a retry resumes as late as it can.
	settle := func(wctx context.Context) {
		for {
			select {
			case end, ok := <-commits:
				if !ok || accept(end) != nil {
					return
				}
			case <-wctx.Done():
				return
			}
		}
	}
	// fail says why the writer stopped, once settled.
	fail := func(cause error) error {
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		settle(wctx)
		if err := w.finish(wctx, committed); err != nil {
			return err
		}
		return cause
	}
	commit := func(end int64, ok bool) error {
		if !ok {
			return fail(fmt.Errorf("write image at %d: the host's writer ended early", committed))
		}
		return accept(end)
	}
	drain := func() error {
		for len(pending) > 0 {
			select {
			case end, ok := <-commits:
				if err := commit(end, ok); err != nil {
					return err
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	pos := offset
	var digest string
	// On a graceful worker stop, the stream ends at the next segment
	// boundary with everything committed and heartbeated, so the next
	// attempt (on another worker) resumes at once instead of waiting for
	// the heartbeat timeout.
	workerStop := activity.GetWorkerStopChannel(ctx)
	for done := false; !done; {
		var c chunk
		select {
		case c = <-chunks:
		case end, ok := <-commits:
			if err := commit(end, ok); err != nil {
				return streamed{}, err
			}
			continue
		case <-ctx.Done():
			return streamed{}, ctx.Err()
		}
		if len(c.buf) > 0 {
			if w == nil {
				if w, err = startWriter(client, in.Disk, disk, pos, in.Image.Size, segSize); err != nil {
					return streamed{}, err
				}
				commits = w.commits
			}
			if _, err := w.stdin.Write(c.buf); err != nil {
				// Most likely dd failed (a full disk) or the connection
				// dropped: the script's exit says which.
				return streamed{}, fail(fmt.Errorf("write image at %d: %w", pos, err))
			}
			pos += int64(len(c.buf))
		}
		if c.buf != nil {
			free <- c.buf[:cap(c.buf)]
		}
		if c.segEnd {
			pending = append(pending, sentSegment{end: pos, state: c.state})
			select {
			case <-workerStop:
				if !c.done {
					if err := drain(); err != nil {
						return streamed{}, err
					}
					log.Info("worker stopping: image stream paused at a segment boundary", "host", in.Host, "offset", pos)
					return streamed{}, temporal.NewApplicationError(
						fmt.Sprintf("worker stopping: %s written up to byte %d; the next attempt resumes there", in.Disk, pos), ErrTypeWorkerStopping)
				}
			default:
			}
		}
		if c.done {
			if c.err != nil {
				if w != nil {
					// The segments sent in full still count: the
					// script ends at the one cut short.
					w.stdin.Close()
					wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
					settle(wctx)
					wcancel()
				}
				return streamed{}, c.err
			}
			digest, done = c.digest, true
		}
	}
	if w != nil {
		w.stdin.Close()
		if err := drain(); err != nil {
			return streamed{}, err
		}
		if err := w.finish(ctx, committed); err != nil {
			return streamed{}, err
		}
	}
	if committed != in.Image.Size {
		return streamed{}, fmt.Errorf("write image: committed %d of %d bytes", committed, in.Image.Size)
	}
	return streamed{from: offset, bytes: pos - offset, sourceBytes: src.source.n, format: src.format, digest: digest, dur: time.Since(start)}, nil
}

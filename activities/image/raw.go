package image

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/api"
)

// Push mode moves the image in chunks of chunkSize through a pool of
// poolChunks buffers: one goroutine reads, decompresses and (a compressed
// image) hashes, the other encrypts and sends. The
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
	state  []byte // hash state at the segment's end; nil when not hashing
	done   bool   // the last item
	err    error  // with done: why reading stopped early
	digest string // with done and no err: the whole image's digest, when hashing
}

// produce reads [from, size) from r, hashing into h unless it is nil, and
// hands it out in chunks that never straddle a segment boundary. It then
// makes sure r has nothing more to give.
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
		if h != nil {
			h.Write(buf[:n])
		}
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
	c := chunk{done: true, err: err}
	if h != nil {
		c.digest = hex.EncodeToString(h.Sum(nil))
	}
	send(c)
}

// startProducer runs produce on its own goroutine with a pool of
// poolChunks buffers: the sender returns each chunk's buf to free once it
// is sent.
func startProducer(ctx context.Context, img api.Image, r io.Reader, h hash.Hash, from, segSize int64) (<-chan chunk, chan<- []byte) {
	free := make(chan []byte, poolChunks)
	for range poolChunks {
		free <- make([]byte, chunkSize)
	}
	chunks := make(chan chunk, poolChunks)
	go produce(ctx, img, r, h, from, segSize, free, chunks)
	return chunks, free
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

// throttled paces reads to a rate, sleeping when ahead of it.
type throttled struct {
	io.Reader
	ctx   context.Context
	rate  int64
	start time.Time
	read  int64
}

func (t *throttled) Read(p []byte) (int, error) {
	if max := t.rate / 10; max > 0 && int64(len(p)) > max {
		p = p[:max]
	}
	n, err := t.Reader.Read(p)
	t.read += int64(n)
	due := t.start.Add(time.Duration(float64(t.read) / float64(t.rate) * float64(time.Second)))
	if wait := time.Until(due); wait > 0 {
		select {
		case <-t.ctx.Done():
			return n, t.ctx.Err()
		case <-time.After(wait):
		}
	}
	return n, err
}

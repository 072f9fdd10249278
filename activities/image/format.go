package image

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Formats an image may come in. The format is told by the first bytes of
// the file, never by its name.
const (
	FormatRaw  = "raw"
	FormatGzip = "gzip"
	FormatZstd = "zstd"
	FormatXZ   = "xz"
)

var magics = []struct {
	format string
	magic  []byte
}{
	{FormatGzip, []byte{0x1f, 0x8b}},
	{FormatZstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{FormatXZ, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
}

// sniffLen is how many leading bytes DetectFormat needs at most.
const sniffLen = 6

// DetectFormat names the format of an image whose file starts with head.
// Anything not compressed in a known way is raw.
func DetectFormat(head []byte) string {
	for _, m := range magics {
		if bytes.HasPrefix(head, m.magic) {
			return m.format
		}
	}
	return FormatRaw
}

// decompressTool is the command that decompresses format to stdout on a
// host, for pull mode; "" for raw.
func decompressTool(format string) string {
	switch format {
	case FormatGzip:
		return "gzip"
	case FormatZstd:
		return "zstd"
	case FormatXZ:
		return "xz"
	}
	return ""
}

// maxZstdWindow bounds the memory a zstd image may make the worker use:
// 128 MiB is what `zstd --long=27` writes; the default levels use 8 MiB or
// less.
const maxZstdWindow = 128 << 20

var (
	// errCorrupt marks a compressed stream that does not decode.
	errCorrupt = errors.New("compressed image does not decode")
	// errCompressedEnd marks a compressed stream cut off before its end.
	errCompressedEnd = errors.New("compressed image ends before its end marker")
)

// decoder wraps a decompressor so that its errors say whether the data
// ended early (errCompressedEnd) or is corrupt (errCorrupt), and the
// source's own errors (the network) pass through unchanged.
type decoder struct {
	r     io.Reader
	src   *errReader
	close func()
}

func (d *decoder) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	switch {
	case err == nil || err == io.EOF:
	case d.src.err != nil:
		err = d.src.err // the source failed, not the data
	case errors.Is(err, io.ErrUnexpectedEOF):
		err = errCompressedEnd
	default:
		err = fmt.Errorf("%w: %v", errCorrupt, err)
	}
	return n, err
}

// errReader remembers a source error other than EOF.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// newDecoder puts format's decompressor on src, which must be buffered
// (the decompressors then read it in large pieces without copying).
func newDecoder(format string, src *bufio.Reader) (*decoder, error) {
	er := &errReader{r: src}
	d := &decoder{src: er, close: func() {}}
	switch format {
	case FormatGzip:
		zr, err := gzip.NewReader(er) // multistream, as gzip -d
		if err != nil {
			return nil, wrapDecodeErr(er, err)
		}
		d.r, d.close = zr, func() { zr.Close() }
	case FormatZstd:
		zr, err := zstd.NewReader(er, zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderConcurrency(2))
		if err != nil {
			return nil, wrapDecodeErr(er, err)
		}
		d.r, d.close = zr, zr.Close
	case FormatXZ:
		zr, err := xz.ReaderConfig{SingleStream: false}.NewReader(er)
		if err != nil {
			return nil, wrapDecodeErr(er, err)
		}
		d.r = zr
	default:
		return nil, fmt.Errorf("no decoder for format %q", format)
	}
	return d, nil
}

func wrapDecodeErr(src *errReader, err error) error {
	switch {
	case src.err != nil:
		return src.err
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return errCompressedEnd
	}
	return fmt.Errorf("%w: %v", errCorrupt, err)
}

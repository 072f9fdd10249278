package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"go.temporal.io/sdk/temporal"

	"github.com/rackflow/rackflow/spec"
)

// imagePath returns the worker-side path of a file:// or absolute-path
// image, or "" for an http(s) image.
func imagePath(raw string) (string, error) {
	if strings.HasPrefix(raw, "/") {
		return raw, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", badInput(fmt.Errorf("image url: %w", err))
	}
	switch u.Scheme {
	case "file":
		return u.Path, nil
	case "http", "https":
		return "", nil
	}
	return "", badInput(fmt.Errorf("image url %q: scheme must be http, https or file", raw))
}

// openRaw returns the raw image's bytes from offset on. It is the one place
// that knows the image's format: for a compressed image it will open the
// source at 0, put the decompressor on it and discard offset bytes of the
// output, since a compressed stream cannot be entered in the middle.
func (a *Activities) openRaw(ctx context.Context, img spec.Image, offset int64) (io.ReadCloser, error) {
	return a.openSource(ctx, img, offset)
}

// openSource opens the image file itself at offset, checking what the
// source says of its size against img.Size before a byte is written.
func (a *Activities) openSource(ctx context.Context, img spec.Image, offset int64) (io.ReadCloser, error) {
	path, err := imagePath(img.URL)
	if err != nil {
		return nil, err
	}
	if path != "" {
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, temporal.NewNonRetryableApplicationError(fmt.Sprintf("open image %s: not found", path), ErrTypeImageNotFound, err)
		}
		if err != nil {
			return nil, fmt.Errorf("open image: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("open image: %w", err)
		}
		if err := checkSize(img, st.Size()); err != nil {
			f.Close()
			return nil, err
		}
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, fmt.Errorf("open image %s at %d: %w", path, offset, err)
		}
		return f, nil
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, img.URL, nil)
	if err != nil {
		return nil, badInput(fmt.Errorf("image url: %w", err))
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := a.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("get image: %w", err) // network: retryable
	}
	if err := httpStatusError(resp, img.URL); err != nil {
		resp.Body.Close()
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			resp.Body.Close()
			return nil, fmt.Errorf("get image from %d: server answered Content-Range %q", offset, resp.Header.Get("Content-Range"))
		}
		if total >= 0 {
			if err := checkSize(img, total); err != nil {
				resp.Body.Close()
				return nil, err
			}
		}
	case resp.ContentLength >= 0:
		if err := checkSize(img, resp.ContentLength); err != nil {
			resp.Body.Close()
			return nil, err
		}
	}
	if offset > 0 && resp.StatusCode == http.StatusOK {
		// The server ignored Range: skip to the offset.
		if _, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("get image: skip to %d: %w", offset, err)
		}
	}
	return resp.Body, nil
}

func httpStatusError(resp *http.Response, u string) error {
	switch c := resp.StatusCode; {
	case c == http.StatusOK || c == http.StatusPartialContent:
		return nil
	case c == http.StatusNotFound || c == http.StatusGone:
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("get image %s: %s", u, resp.Status), ErrTypeImageNotFound, nil)
	case c == http.StatusTooManyRequests || c == http.StatusRequestTimeout || c >= 500:
		return fmt.Errorf("get image %s: %s", u, resp.Status) // retryable
	default:
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("get image %s: %s", u, resp.Status), ErrTypeImageUnavailable, nil)
	}
}

// checkSize compares a size the source announces with the expected one.
func checkSize(img spec.Image, got int64) error {
	switch {
	case got < img.Size:
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("image %s has %d bytes, expected %d", img.URL, got, img.Size), ErrTypeImageTruncated, nil)
	case got > img.Size:
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("image %s has %d bytes, expected %d", img.URL, got, img.Size), ErrTypeImageSizeMismatch, nil)
	}
	return nil
}

// parseContentRange parses "bytes START-END/TOTAL"; total is -1 for "*".
func parseContentRange(s string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	first, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if tot == "*" {
		return start, -1, true
	}
	total, err = strconv.ParseInt(tot, 10, 64)
	return start, total, err == nil
}

// CheckImage is a cheap up-front check that the image exists and, where
// the source says, has the expected size. It reads no image data.
func (a *Activities) CheckImage(ctx context.Context, img spec.Image) error {
	path, err := imagePath(img.URL)
	if err != nil {
		return err
	}
	if path != "" {
		st, err := os.Stat(path)
		if errors.Is(err, os.ErrNotExist) {
			return temporal.NewNonRetryableApplicationError(fmt.Sprintf("image %s: not found", path), ErrTypeImageNotFound, err)
		}
		if err != nil {
			return fmt.Errorf("check image: %w", err)
		}
		if !st.Mode().IsRegular() {
			return temporal.NewNonRetryableApplicationError(fmt.Sprintf("image %s: not a regular file", path), ErrTypeImageUnavailable, nil)
		}
		return checkSize(img, st.Size())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, img.URL, nil)
	if err != nil {
		return badInput(fmt.Errorf("image url: %w", err))
	}
	resp, err := a.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("check image: %w", err)
	}
	resp.Body.Close()
	if err := httpStatusError(resp, img.URL); err != nil {
		return err
	}
	if resp.ContentLength >= 0 {
		return checkSize(img, resp.ContentLength)
	}
	return nil
}

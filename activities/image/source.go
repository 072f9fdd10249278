package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/api"
)

// imagePath returns the worker-side path of a file:// or absolute-path
// image, or "" for an http(s) image.
func imagePath(raw string) (string, error) {
	if strings.HasPrefix(raw, "/") {
		return raw, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", activities.InvalidInput(fmt.Errorf("image url: %w", err))
	}
	switch u.Scheme {
	case "file":
		return u.Path, nil
	case "http", "https":
		return "", nil
	}
	return "", activities.InvalidInput(fmt.Errorf("image url %q: scheme must be http, https or file", raw))
}

// localRel returns a local image's path relative to ImageDir. A path
// outside it, or any local path when ImageDir is empty, is InvalidInput:
// the input names the image, and must not name any file the worker can
// read (its secrets file, /etc/shadow), to be streamed to a host.
func (a *Activities) localRel(path string) (string, error) {
	if a.ImageDir == "" {
		return "", activities.InvalidInputf("image %s: this worker serves no local images (no --image-dir); use an http(s) URL", path)
	}
	dir, err := filepath.Abs(a.ImageDir)
	if err != nil {
		return "", fmt.Errorf("image dir: %w", err)
	}
	rel, err := filepath.Rel(dir, filepath.Clean(path))
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return "", activities.InvalidInputf("image %s: not under the image directory %s", path, a.ImageDir)
	}
	return rel, nil
}

// openLocal opens a local image inside ImageDir through an os.Root, so
// neither ".." nor a symlink leads out of it.
func (a *Activities) openLocal(path string) (*os.File, error) {
	rel, err := a.localRel(path)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(a.ImageDir)
	if err != nil {
		return nil, fmt.Errorf("image dir: %w", err) // retryable: an operator may fix it
	}
	defer root.Close()
	f, err := root.Open(rel)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, activities.NonRetryable(fmt.Sprintf("open image %s: not found", path), activities.ErrTypeImageNotFound, nil)
	case err != nil && strings.Contains(err.Error(), "path escapes from parent"):
		// os.Root's error for a symlink out of the directory; it has no
		// exported sentinel.
		return nil, activities.InvalidInputf("image %s: leads out of the image directory %s", path, a.ImageDir)
	case err != nil:
		return nil, fmt.Errorf("open image: %w", err)
	}
	return f, nil
}

// openSource opens the image file itself at offset (up to end, inclusive,
// when end >= 0) and returns what the source says the whole file's size
// is, -1 when it does not say.
func (a *Activities) openSource(ctx context.Context, img api.Image, offset, end int64) (io.ReadCloser, int64, error) {
	path, err := imagePath(img.URL)
	if err != nil {
		return nil, 0, err
	}
	if path != "" {
		f, err := a.openLocal(path)
		if err != nil {
			return nil, 0, err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("open image: %w", err)
		}
		if !st.Mode().IsRegular() {
			f.Close()
			return nil, 0, activities.NonRetryable(fmt.Sprintf("image %s: not a regular file", path), activities.ErrTypeImageUnavailable, nil)
		}
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("open image %s at %d: %w", path, offset, err)
		}
		return f, st.Size(), nil
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, img.URL, nil)
	if err != nil {
		return nil, 0, activities.InvalidInput(fmt.Errorf("image url: %w", err))
	}
	switch {
	case end >= 0:
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, end))
	case offset > 0:
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := a.httpClient().Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("get image: %w", err) // network: retryable
	}
	if err := httpStatusError(resp, img.URL); err != nil {
		resp.Body.Close()
		return nil, 0, err
	}
	total := int64(-1)
	switch {
	case resp.StatusCode == http.StatusPartialContent:
		start, t, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("get image from %d: server answered Content-Range %q", offset, resp.Header.Get("Content-Range"))
		}
		total = t
	case resp.ContentLength >= 0:
		total = resp.ContentLength
	}
	if offset > 0 && resp.StatusCode == http.StatusOK {
		// The server ignored Range: skip to the offset.
		if _, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("get image: skip to %d: %w", offset, err)
		}
	}
	return resp.Body, total, nil
}

func httpStatusError(resp *http.Response, u string) error {
	return statusError(resp.StatusCode, u)
}

// statusError classifies an image server's answer: nil for 200 and 206.
func statusError(code int, u string) error {
	status := fmt.Sprintf("%d %s", code, http.StatusText(code))
	switch {
	case code == http.StatusOK || code == http.StatusPartialContent:
		return nil
	case code == http.StatusNotFound || code == http.StatusGone:
		return activities.NonRetryable(fmt.Sprintf("get image %s: %s", u, status), activities.ErrTypeImageNotFound, nil)
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500:
		return fmt.Errorf("get image %s: %s", u, status) // retryable
	default:
		return activities.NonRetryable(fmt.Sprintf("get image %s: %s", u, status), activities.ErrTypeImageUnavailable, nil)
	}
}

// checkSize compares a size the source announces with the expected one.
func checkSize(img api.Image, got int64) error {
	switch {
	case got < img.Size:
		return activities.NonRetryable(fmt.Sprintf("image %s has %d bytes, expected %d", img.URL, got, img.Size), activities.ErrTypeImageTruncated, nil)
	case got > img.Size:
		return activities.NonRetryable(fmt.Sprintf("image %s has %d bytes, expected %d", img.URL, got, img.Size), activities.ErrTypeImageSizeMismatch, nil)
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

// CheckImage is a cheap up-front check that the image exists, what format
// it is in and, for a raw image whose source says its size, that the size
// is the expected one. It reads only the image's first bytes.
func (a *Activities) CheckImage(ctx context.Context, img api.Image) error {
	_, err := a.sniff(ctx, img)
	return err
}

// sniff reads the image's first bytes and returns its format, checking a
// raw image's announced size.
func (a *Activities) sniff(ctx context.Context, img api.Image) (string, error) {
	rc, total, err := a.openSource(ctx, img, 0, 15)
	if err != nil {
		return "", err // already says what failed, and may be typed
	}
	defer rc.Close()
	head := make([]byte, sniffLen)
	n, err := io.ReadFull(rc, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return "", fmt.Errorf("check image: read: %w", err)
	}
	format := DetectFormat(head[:n])
	if format == FormatRaw && total >= 0 {
		if err := checkSize(img, total); err != nil {
			return "", err
		}
	}
	return format, nil
}

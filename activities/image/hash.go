package image

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"hash"

	"go.temporal.io/sdk/activity"
)

// newHash returns a fresh hash of the image's checksum algorithm.
func newHash(algo string) hash.Hash {
	if algo == "sha512" {
		return sha512.New()
	}
	return sha256.New()
}

// algoOf names h's algorithm, by its size.
func algoOf(h hash.Hash) string {
	if h.Size() == sha512.Size {
		return "sha512"
	}
	return "sha256"
}

// hostHasher is the host's command that prints the digest of its stdin:
// openssl where installed (about three times faster than coreutils).
func hostHasher(info diskInfo, algo string) string {
	if info.tools["openssl"] {
		return "openssl dgst -" + algo + " -r"
	}
	return algo + "sum"
}

// marshalHash is h's state; nil for no hash.
func marshalHash(h hash.Hash) []byte {
	if h == nil {
		return nil
	}
	b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		panic(err) // sha256 and sha512 always marshal
	}
	return b
}

// resumeHash is the hash of the image's first prev.Offset bytes, restored
// from the state the previous attempt saved. A raw image saves none (the
// worker does not hash it), and resumes without; a compressed one without
// a usable state starts over: prev comes back empty.
func resumeHash(ctx context.Context, host, algo string, prev Progress) (hash.Hash, Progress) {
	h := newHash(algo)
	if prev.Offset > 0 {
		if len(prev.HashState) == 0 && (prev.Format == "" || prev.Format == FormatRaw) {
			return h, prev
		}
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(prev.HashState); err != nil {
			activity.GetLogger(ctx).Warn("previous attempt's progress has no usable hash state: starting over", "host", host, "error", err)
			h.Reset()
			prev = Progress{}
		}
	}
	return h, prev
}

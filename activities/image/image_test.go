package image_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/sshd"
)

const mib = 1 << 20

// fixture is one image file on the worker and one "disk" on the host.
type fixture struct {
	dir       string
	data      []byte
	img       api.Image
	imagePath string
	disk      string
	diskSize  int64
	key       sshd.Key
	acts      *image.Activities
}

// marker fills the disk right past the image, to prove it stays untouched.
var marker = bytes.Repeat([]byte{0xAB}, 4096)

func newFixture(t testing.TB, size, diskSize int64) *fixture {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	return newFixtureData(t, data, diskSize)
}

// newFixtureData is newFixture for a given raw image.
func newFixtureData(t testing.TB, data []byte, diskSize int64) *fixture {
	t.Helper()
	size := int64(len(data))
	f := &fixture{dir: t.TempDir(), diskSize: diskSize, key: sshd.TestKey(t), data: data}
	sum := sha256.Sum256(f.data)
	f.imagePath = filepath.Join(f.dir, "os.raw")
	if err := os.WriteFile(f.imagePath, f.data, 0o644); err != nil {
		t.Fatal(err)
	}
	f.img = api.Image{URL: f.imagePath, Size: size, SHA256: hex.EncodeToString(sum[:])}
	// The disk is a sparse file, as `truncate -s` makes.
	f.disk = filepath.Join(f.dir, "disk")
	d, err := os.Create(f.disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Truncate(diskSize); err != nil {
		t.Fatal(err)
	}
	if diskSize >= size+int64(len(marker)) {
		if _, err := d.WriteAt(marker, size); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	f.acts = &image.Activities{
		Dialer:         &remote.Dialer{Secrets: secrets.Static{"ssh/live": {PrivateKey: f.key.PEM}}},
		SegmentSize:    1 * mib,
		HeartbeatEvery: 100 * time.Millisecond,
		ImageDir:       f.dir,
	}
	return f
}

func (f *fixture) input(addr, hostKey string) image.WriteInput {
	return image.WriteInput{
		Host:   "node07",
		Target: remote.Target{Addr: addr, Credential: "ssh/live", HostKey: hostKey},
		Image:  f.img,
		Disk:   f.disk,
	}
}

// checkDisk asserts the disk holds the image, and nothing else changed.
func (f *fixture) checkDisk(t *testing.T) {
	t.Helper()
	got, err := os.ReadFile(f.disk)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(got)) != f.diskSize {
		t.Fatalf("disk is %d bytes, was %d", len(got), f.diskSize)
	}
	sum := sha256.Sum256(got[:f.img.Size])
	if hex.EncodeToString(sum[:]) != f.img.SHA256 {
		t.Fatalf("disk's first %d bytes hash to %x, want %s", f.img.Size, sum, f.img.SHA256)
	}
	if !bytes.Equal(got[f.img.Size:f.img.Size+int64(len(marker))], marker) {
		t.Fatal("bytes past the image were changed")
	}
	if rest := got[f.img.Size+int64(len(marker)):]; bytes.Count(rest, []byte{0}) != len(rest) {
		t.Fatal("the sparse tail of the disk was written")
	}
}

type run struct {
	res        image.WriteResult
	err        error
	heartbeats []image.Progress
}

func execute(t testing.TB, acts *image.Activities, in image.WriteInput, resume *image.Progress) run {
	t.Helper()
	var ts testsuite.WorkflowTestSuite
	ts.SetLogger(log.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	if resume != nil {
		env.SetHeartbeatDetails(*resume)
	}
	var r run
	var mu sync.Mutex
	env.SetOnActivityHeartbeatListener(func(_ *activity.Info, d converter.EncodedValues) {
		var p image.Progress
		if err := d.Get(&p); err != nil {
			t.Errorf("heartbeat details: %v", err)
			return
		}
		mu.Lock()
		r.heartbeats = append(r.heartbeats, p)
		mu.Unlock()
	})
	v, err := env.ExecuteActivity(acts.WriteImage, in)
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		r.err = err
		return r
	}
	if err := v.Get(&r.res); err != nil {
		t.Fatal(err)
	}
	return r
}

func wantAppError(t *testing.T, err error, typ string, nonRetryable bool) *temporal.ApplicationError {
	t.Helper()
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) {
		t.Fatalf("want %s, got %T: %v", typ, err, err)
	}
	if ae.Type() != typ || ae.NonRetryable() != nonRetryable {
		t.Fatalf("want %s (non-retryable=%v), got %s (non-retryable=%v): %v", typ, nonRetryable, ae.Type(), ae.NonRetryable(), err)
	}
	return ae
}

func startSSHD(t *testing.T, f *fixture, opts sshd.Options) *sshd.Server {
	opts.AuthorizedKeys = append(opts.AuthorizedKeys, f.key.Public())
	return sshd.Start(t, opts)
}

func TestWriteImage(t *testing.T) {
	tests := map[string]struct {
		url         func(f *fixture) string
		verifyAfter bool // read the disk back once the write is done
	}{
		"absolute path": {url: func(f *fixture) string { return f.imagePath }},
		"file url":      {url: func(f *fixture) string { return "file://" + f.imagePath }},
		"http url": {url: func(f *fixture) string {
			srv := httptest.NewServer(http.FileServer(http.Dir(f.dir)))
			t.Cleanup(srv.Close)
			return srv.URL + "/os.raw"
		}},
		"read back after the write": {url: func(f *fixture) string { return f.imagePath }, verifyAfter: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			// Not a multiple of the segment or of dd's block size.
			f := newFixture(t, 3*mib+12345, 8*mib)
			f.img.URL = tc.url(f)
			f.acts.VerifyAfterWrite = tc.verifyAfter
			srv := startSSHD(t, f, sshd.Options{})
			r := execute(t, f.acts, f.input(srv.Addr(), srv.HostKeyLine()), nil)
			if r.err != nil {
				t.Fatalf("WriteImage: %v", r.err)
			}
			f.checkDisk(t)
			if r.res.Digest != f.img.SHA256 || r.res.Bytes != f.img.Size || r.res.ResumedFrom != 0 {
				t.Errorf("result %+v: want digest %s, bytes %d, resumed from 0", r.res, f.img.SHA256, f.img.Size)
			}
			if len(r.heartbeats) == 0 || r.heartbeats[0].Total != f.img.Size {
				t.Errorf("heartbeats %+v: want progress out of %d", r.heartbeats, f.img.Size)
			}
		})
	}
}

func TestWriteImageRefuses(t *testing.T) {
	type tc struct {
		size, diskSize int64
		prepare        func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options
		errType        string
		retryable      bool
		errHas         []string
		verifyAfter    bool
	}
	// A dd that reports success but leaves one bad byte, as a failing disk
	// might: only the read-back can catch it.
	forgetfulDisk := func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
		bin := t.TempDir()
		script := "#!/bin/sh\n/bin/dd \"$@\" || exit\nfor a; do case $a in of=*) printf X | /bin/dd of=\"${a#of=}\" bs=1 seek=100 conv=notrunc status=none;; esac; done\n"
		if err := os.WriteFile(filepath.Join(bin, "dd"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		return sshd.Options{PathPrefix: []string{bin}}
	}
	tests := map[string]tc{
		"disk too small": {
			size: 2 * mib, diskSize: 2*mib - 1,
			errType: activities.ErrTypeDiskTooSmall, errHas: []string{"2097151", "2097152"},
		},
		"disk missing": {
			size: mib, diskSize: 2 * mib,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				in.Disk = f.disk + "-nope"
				return sshd.Options{}
			},
			errType: activities.ErrTypeDiskNotFound,
		},
		"disk mounted": {
			size: mib, diskSize: 2 * mib,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				// sshd runs in a private mount namespace in which a file is
				// bind-mounted onto the disk, so /proc/mounts lists it for
				// the remote session only.
				over := filepath.Join(f.dir, "over")
				if err := os.WriteFile(over, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				// And the check resolves symlinks.
				link := filepath.Join(f.dir, "disk-link")
				if err := os.Symlink(f.disk, link); err != nil {
					t.Fatal(err)
				}
				in.Disk = link
				return sshd.Options{Wrapper: []string{"unshare", "--mount", "--propagation", "private", "--",
					"sh", "-c", `mount --bind "$1" "$2" && shift 2 && exec "$@"`, "sh", over, f.disk}}
			},
			errType: activities.ErrTypeDiskMounted, errHas: []string{"disk"},
		},
		"wrong expected digest": {
			size: mib, diskSize: 2 * mib,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				in.Image.SHA256 = strings.Repeat("0", 64)
				return sshd.Options{}
			},
			errType: activities.ErrTypeImageChecksumMismatch, errHas: []string{strings.Repeat("0", 64)},
		},
		"disk does not keep the data": {
			size: mib, diskSize: 2 * mib,
			prepare: forgetfulDisk,
			errType: activities.ErrTypeImageChecksumMismatch, errHas: []string{"disk read back"},
		},
		"disk does not keep the data, read back after the write": {
			size: mib, diskSize: 2 * mib,
			prepare: forgetfulDisk,
			errType: activities.ErrTypeImageChecksumMismatch, errHas: []string{"disk read back"}, verifyAfter: true,
		},
		"image not found": {
			size: mib, diskSize: 2 * mib,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				in.Image.URL = f.imagePath + ".gone"
				return sshd.Options{}
			},
			errType: activities.ErrTypeImageNotFound,
		},
		"image shorter than size": {
			size: mib, diskSize: 2 * mib,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				in.Image.Size++
				return sshd.Options{}
			},
			errType: activities.ErrTypeImageTruncated,
		},
		"image longer than size": {
			size: mib, diskSize: 2 * mib,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				in.Image.Size--
				return sshd.Options{}
			},
			errType: activities.ErrTypeImageSizeMismatch,
		},
		"http 404": {
			size: mib, diskSize: 2 * mib,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				in.Image.URL = httpServer(t, http.NotFoundHandler()) + "/os.raw"
				return sshd.Options{}
			},
			errType: activities.ErrTypeImageNotFound, errHas: []string{"404"},
		},
		"http 503 is retryable": {
			size: mib, diskSize: 2 * mib,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				in.Image.URL = httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					http.Error(w, "busy", http.StatusServiceUnavailable)
				})) + "/os.raw"
				return sshd.Options{}
			},
			errType: "", retryable: true, errHas: []string{"503"},
		},
		"http source ends early": {
			size: 3 * mib, diskSize: 4 * mib,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				// No Content-Length (chunked): the short body is only
				// found out while streaming, after two segments.
				in.Image.URL = httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Write(f.data[:mib])
					w.(http.Flusher).Flush()
					w.Write(f.data[mib : 2*mib+100])
				})) + "/os.raw"
				return sshd.Options{}
			},
			errType: activities.ErrTypeImageTruncated, errHas: []string{"2097252"},
		},
		"http content-length short": {
			size: mib, diskSize: 2 * mib,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				in.Image.URL = httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					http.ServeContent(w, r, "os.raw", time.Time{}, bytes.NewReader(f.data[:mib-1]))
				})) + "/os.raw"
				return sshd.Options{}
			},
			errType: activities.ErrTypeImageTruncated,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, tc.size, tc.diskSize)
			f.acts.VerifyAfterWrite = tc.verifyAfter
			in := f.input("", "")
			var opts sshd.Options
			if tc.prepare != nil {
				opts = tc.prepare(t, f, &in)
			}
			srv := startSSHD(t, f, opts)
			in.Target.Addr, in.Target.HostKey = srv.Addr(), srv.HostKeyLine()
			r := execute(t, f.acts, in, nil)
			if r.err == nil {
				t.Fatalf("WriteImage succeeded: %+v", r.res)
			}
			if tc.retryable {
				var ae *temporal.ApplicationError
				if errors.As(r.err, &ae) && ae.NonRetryable() {
					t.Fatalf("want a retryable error, got %v", r.err)
				}
			} else {
				wantAppError(t, r.err, tc.errType, true)
			}
			for _, s := range tc.errHas {
				if !strings.Contains(r.err.Error(), s) {
					t.Errorf("error %q lacks %q", r.err, s)
				}
			}
		})
	}
}

func httpServer(t *testing.T, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestWriteImageResume kills the first attempt mid-stream (the in-process
// server drops the connection) and gives a second attempt the first one's
// last heartbeat, as Temporal does on retry.
func TestWriteImageResume(t *testing.T) {
	for _, source := range []string{"file", "http"} {
		t.Run(source, func(t *testing.T) {
			f := newFixture(t, 5*mib+777, 8*mib)
			var ranges []string
			var mu sync.Mutex
			if source == "http" {
				fs := http.FileServer(http.Dir(f.dir))
				f.img.URL = httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					mu.Lock()
					ranges = append(ranges, r.Header.Get("Range"))
					mu.Unlock()
					fs.ServeHTTP(w, r)
				})) + "/os.raw"
			}
			fake := sshd.StartFake(t, sshd.FakeOptions{
				AuthorizedKeys: []ssh.PublicKey{f.key.Public()},
				DropAfterStdin: 2*mib + mib/2, // in the third 1 MiB segment
			})
			in := f.input(fake.Addr(), fake.HostKeyLine())

			first := execute(t, f.acts, in, nil)
			if first.err == nil {
				t.Fatal("first attempt succeeded through a dropped connection")
			}
			var ae *temporal.ApplicationError
			if errors.As(first.err, &ae) && ae.NonRetryable() {
				t.Fatalf("first attempt failed non-retryably: %v", first.err)
			}
			if fake.Drops() != 1 {
				t.Fatalf("server dropped %d connections, want 1", fake.Drops())
			}
			if len(first.heartbeats) == 0 {
				t.Fatal("first attempt recorded no heartbeat")
			}
			// The drop lands in the third segment. The second one's dd may
			// or may not have confirmed before it (segments overlap), the
			// first one's has: the progress names one or two segments.
			last := first.heartbeats[len(first.heartbeats)-1]
			if last.Offset != mib && last.Offset != 2*mib {
				t.Fatalf("first attempt's last heartbeat at offset %d, want %d or %d (acknowledged segments only)", last.Offset, mib, 2*mib)
			}

			// The dropped connection's sessions may still be draining what
			// they had buffered: count from when that has settled.
			before := settledStdin(fake)
			second := execute(t, f.acts, in, &last)
			if second.err != nil {
				t.Fatalf("second attempt: %v", second.err)
			}
			if second.res.ResumedFrom != last.Offset || second.res.Bytes != f.img.Size-last.Offset {
				t.Errorf("second attempt resumed from %d and streamed %d, want %d and %d", second.res.ResumedFrom, second.res.Bytes, last.Offset, f.img.Size-last.Offset)
			}
			// What went over the wire: the rest of the image plus the small
			// disk-check script.
			if sent := fake.StdinBytes() - before; sent < f.img.Size-last.Offset || sent > f.img.Size-last.Offset+16<<10 {
				t.Errorf("second attempt sent %d bytes, want about %d", sent, f.img.Size-last.Offset)
			}
			if source == "http" {
				mu.Lock()
				got := ranges[len(ranges)-1]
				mu.Unlock()
				if want := fmt.Sprintf("bytes=%d-", last.Offset); got != want {
					t.Errorf("second attempt's request had Range %q, want %s", got, want)
				}
			}
			f.checkDisk(t)
		})
	}
}

// TestWriteImageSlowDiskHeartbeats looks at a heartbeat taken in the middle
// of a slow segment: it must name only what dd has acknowledged.
func TestWriteImageSlowDiskHeartbeats(t *testing.T) {
	f := newFixture(t, 3*mib, 4*mib)
	fake := sshd.StartFake(t, sshd.FakeOptions{AuthorizedKeys: []ssh.PublicKey{f.key.Public()}, StdinBytesPerSecond: mib})
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(f.acts)
	// The SDK batches heartbeats (30s here) but flushes the latest one
	// when the worker stops: that shows what the server would have seen.
	stop := make(chan struct{})
	env.SetWorkerStopChannel(stop)
	var mu sync.Mutex
	var hb []image.Progress
	env.SetOnActivityHeartbeatListener(func(_ *activity.Info, d converter.EncodedValues) {
		var p image.Progress
		_ = d.Get(&p)
		mu.Lock()
		hb = append(hb, p)
		mu.Unlock()
	})
	// Each 1 MiB segment takes ~1s and two overlap (one being sent while
	// the one before flushes): stop the worker when the first two segments
	// have reached the disk, so the third is under way. Watching the disk,
	// not the clock, keeps this right on a loaded machine.
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	go func() {
		defer close(stop)
		for watchCtx.Err() == nil {
			if got, err := os.ReadFile(f.disk); err == nil && len(got) >= 2*mib && bytes.Equal(got[:2*mib], f.data[:2*mib]) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	if _, err := env.ExecuteActivity(f.acts.WriteImage, f.input(fake.Addr(), fake.HostKeyLine())); err != nil {
		t.Fatal(err)
	}
	f.checkDisk(t)
	mu.Lock()
	defer mu.Unlock()
	if len(hb) < 2 {
		t.Fatalf("heartbeats %+v: want the first and the flushed one", hb)
	}
	got := hb[1]
	if got.Offset != mib && got.Offset != 2*mib {
		t.Errorf("heartbeat in the middle of the third segment says offset %d, want %d or %d (acknowledged segments only)", got.Offset, mib, 2*mib)
	}
	// The disk takes 1 MiB/s at most, so the rate is at most that; the
	// ETA is what is left at that rate.
	left := float64(f.img.Size-got.Offset) / (got.MBps * 1e6)
	if got.MBps <= 0 || got.MBps > 1.1 || math.Abs(got.ETASeconds-left) > 0.01*left || got.Phase != "write" || got.Mode != image.ModePush || got.Format != image.FormatRaw {
		t.Errorf("heartbeat %+v: want a rate of at most 1 MiB/s, an ETA of the bytes left at that rate (%.2fs), phase write, mode push, format raw", got, left)
	}
}

func TestCheckImage(t *testing.T) {
	f := newFixture(t, mib, 2*mib)
	url := httpServer(t, http.FileServer(http.Dir(f.dir)))
	tests := map[string]struct {
		img     api.Image
		errType string
	}{
		"file ok":         {img: f.img},
		"http ok":         {img: api.Image{URL: url + "/os.raw", Size: f.img.Size, SHA256: f.img.SHA256}},
		"file missing":    {img: api.Image{URL: f.imagePath + "x", Size: 1}, errType: activities.ErrTypeImageNotFound},
		"http missing":    {img: api.Image{URL: url + "/nope", Size: 1}, errType: activities.ErrTypeImageNotFound},
		"http wrong size": {img: api.Image{URL: url + "/os.raw", Size: f.img.Size + 1}, errType: activities.ErrTypeImageTruncated},
		"file too big":    {img: api.Image{URL: "file://" + f.imagePath, Size: f.img.Size - 1}, errType: activities.ErrTypeImageSizeMismatch},
		"bad scheme":      {img: api.Image{URL: "ftp://x/y", Size: 1}, errType: activities.ErrTypeInvalidInput},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var ts testsuite.WorkflowTestSuite
			env := ts.NewTestActivityEnvironment()
			env.RegisterActivity(f.acts)
			_, err := env.ExecuteActivity(f.acts.CheckImage, tc.img)
			if tc.errType == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantAppError(t, err, tc.errType, true)
		})
	}
}

// settledStdin waits until the fake's stdin count stops moving.
func settledStdin(f *sshd.Fake) int64 {
	n := f.StdinBytes()
	for i := 0; i < 50; i++ {
		time.Sleep(50 * time.Millisecond)
		m := f.StdinBytes()
		if m == n {
			return m
		}
		n = m
	}
	return n
}

// TestLocalImagesStayInImageDir: the input names the image, so a local
// path must not reach any file the worker can read: only files inside
// ImageDir are streamed, whatever ".." or a symlink says.
func TestLocalImagesStayInImageDir(t *testing.T) {
	f := newFixture(t, mib, 2*mib)
	outside := t.TempDir()
	shadow := filepath.Join(outside, "shadow")
	if err := os.WriteFile(shadow, []byte("root:$6$secret:19000:0:99999:7:::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(shadow, filepath.Join(f.dir, "escape.raw")); err != nil {
		t.Fatal(err)
	}
	// A relative link inside the directory is followed (an absolute one
	// is refused by os.Root, wherever it points).
	if err := os.Symlink("os.raw", filepath.Join(f.dir, "latest.raw")); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(f.dir, shadow)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		url      string
		noDir    bool
		wantType string // "" = success
	}{
		"inside":            {url: f.imagePath},
		"inside, file url":  {url: "file://" + f.imagePath},
		"symlink inside":    {url: filepath.Join(f.dir, "latest.raw")},
		"outside":           {url: shadow, wantType: activities.ErrTypeInvalidInput},
		"outside, file url": {url: "file://" + shadow, wantType: activities.ErrTypeInvalidInput},
		"etc shadow":        {url: "/etc/shadow", wantType: activities.ErrTypeInvalidInput},
		"dot-dot":           {url: filepath.Join(f.dir, "x") + "/../" + rel, wantType: activities.ErrTypeInvalidInput},
		"dot-dot, encoded":  {url: "file://" + f.dir + "/%2e%2e/" + rel, wantType: activities.ErrTypeInvalidInput},
		"symlink out":       {url: filepath.Join(f.dir, "escape.raw"), wantType: activities.ErrTypeInvalidInput},
		"missing inside":    {url: filepath.Join(f.dir, "gone.raw"), wantType: activities.ErrTypeImageNotFound},
		"no image dir":      {url: f.imagePath, noDir: true, wantType: activities.ErrTypeInvalidInput},
		"image dir itself":  {url: f.dir, wantType: activities.ErrTypeImageUnavailable},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			acts := *f.acts
			if tc.noDir {
				acts.ImageDir = ""
			}
			var ts testsuite.WorkflowTestSuite
			env := ts.NewTestActivityEnvironment()
			env.RegisterActivity(&acts)
			img := f.img
			img.URL = tc.url
			_, err := env.ExecuteActivity(acts.CheckImage, img)
			if tc.wantType == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantAppError(t, err, tc.wantType, true)
		})
	}

	// WriteImage refuses before it logs in to the host.
	srv := sshd.StartFake(t, sshd.FakeOptions{AuthorizedKeys: []ssh.PublicKey{f.key.Public()}})
	in := f.input(srv.Addr(), srv.HostKeyLine())
	in.Image.URL = filepath.Join(f.dir, "escape.raw")
	r := execute(t, f.acts, in, nil)
	wantAppError(t, r.err, activities.ErrTypeInvalidInput, true)
	if cmds := srv.Commands(); len(cmds) != 0 {
		t.Errorf("the host was asked to run %q", cmds)
	}
}

package image_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/testsuite/sshd"
)

// compressible is an image that compresses to about a quarter, as an OS
// image with free space does: each 64 KiB holds 16 KiB of random bytes.
func compressible(size int) []byte {
	b := make([]byte, size)
	for off := 0; off < size; off += 64 << 10 {
		rand.Read(b[off:min(off+16<<10, size)])
	}
	return b
}

// compressTool compresses with the real command-line tools, as an image
// builder would.
var compressTool = map[string]struct {
	args []string
	pkg  string
}{
	image.FormatGzip: {[]string{"gzip", "-c", "-n"}, "gzip"},
	image.FormatZstd: {[]string{"zstd", "-c", "-q"}, "zstd"},
	image.FormatXZ:   {[]string{"xz", "-c", "-T1"}, "xz-utils"},
}

func compress(t testing.TB, format string, raw []byte) []byte {
	t.Helper()
	if format == image.FormatRaw {
		return raw
	}
	tool := compressTool[format]
	if _, err := exec.LookPath(tool.args[0]); err != nil {
		t.Fatalf("%s not found: install the Debian package %s", tool.args[0], tool.pkg)
	}
	cmd := exec.Command(tool.args[0], tool.args[1:]...)
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", tool.args[0], err)
	}
	return out
}

// writeSource writes the image file (compressed as format) into f.dir and
// points f.img at it through an HTTP server (or the file when http is
// false). The file's name says nothing of its format.
func (f *fixture) writeSource(t testing.TB, format string, http bool) []byte {
	t.Helper()
	file := compress(t, format, f.data)
	if err := os.WriteFile(filepath.Join(f.dir, "os.img"), file, 0o644); err != nil {
		t.Fatal(err)
	}
	f.img.URL = filepath.Join(f.dir, "os.img")
	if http {
		f.img.URL = f.serve(t) + "/os.img"
	}
	return file
}

// serve serves f.dir over HTTP on loopback, with Range support.
func (f *fixture) serve(t testing.TB) string {
	return httpServer(t.(*testing.T), http.FileServer(http.Dir(f.dir)))
}

var formats = []string{image.FormatRaw, image.FormatGzip, image.FormatZstd, image.FormatXZ}

func TestWriteImageFormatsAndModes(t *testing.T) {
	type tc struct {
		format, mode string
		http, helper bool
	}
	tests := map[string]tc{}
	for _, format := range formats {
		tests[format+"/push/file"] = tc{format, image.ModePush, false, false}
		tests[format+"/push/http"] = tc{format, image.ModePush, true, false}
		tests[format+"/pull/http"] = tc{format, image.ModePull, true, false}
		// rackflow-diskhelper writing and reading back on the host.
		tests[format+"/push/file/helper"] = tc{format, image.ModePush, false, true}
		tests[format+"/pull/http/helper"] = tc{format, image.ModePull, true, true}
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixtureData(t, compressible(3*mib+12345), 8*mib)
			file := f.writeSource(t, tc.format, tc.http)
			if tc.helper {
				f.acts.DiskHelper = helperPath
			}
			srv := startSSHD(t, f, sshd.Options{})
			in := f.input(srv.Addr(), srv.HostKeyLine())
			in.Mode = tc.mode
			r := execute(t, f.acts, in, nil)
			if r.err != nil {
				t.Fatalf("WriteImage: %v", r.err)
			}
			f.checkDisk(t)
			if r.res.Digest != f.img.SHA256 || r.res.Bytes != f.img.Size || r.res.Format != tc.format || r.res.Mode != tc.mode || r.res.Helper != tc.helper {
				t.Errorf("result %+v: want digest %s, %d bytes, format %s, mode %s, helper %v", r.res, f.img.SHA256, f.img.Size, tc.format, tc.mode, tc.helper)
			}
			if tc.mode == image.ModePush && r.res.SourceBytes != int64(len(file)) {
				t.Errorf("worker read %d bytes of the image file, want its size %d", r.res.SourceBytes, len(file))
			}
			if len(r.heartbeats) == 0 || r.heartbeats[0].Total != f.img.Size || r.heartbeats[0].Mode != tc.mode {
				t.Errorf("heartbeats %+v: want progress out of %d in mode %s", r.heartbeats, f.img.Size, tc.mode)
			}
		})
	}
}

// TestWriteImagePullStaysOutOfTheDataPath checks that in pull mode the
// image does not go through the worker's SSH connection, and what the
// host ran to fetch it.
func TestWriteImagePullStaysOutOfTheDataPath(t *testing.T) {
	f := newFixtureData(t, compressible(3*mib), 4*mib)
	f.writeSource(t, image.FormatZstd, true)
	fake := sshd.StartFake(t, sshd.FakeOptions{AuthorizedKeys: []ssh.PublicKey{f.key.Public()}})
	in := f.input(fake.Addr(), fake.HostKeyLine())
	in.Mode = image.ModePull
	r := execute(t, f.acts, in, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	f.checkDisk(t)
	if n := fake.StdinBytes(); n > 64<<10 {
		t.Errorf("the worker sent %d bytes over SSH in pull mode, want only scripts and offsets", n)
	}
	var fetched bool
	for _, c := range fake.Commands() {
		if strings.Contains(c, "zstd -dcq") && strings.Contains(c, f.img.URL) {
			fetched = true
		}
	}
	if !fetched || r.res.SourceBytes != 0 {
		t.Errorf("want the host to fetch %s and decompress it with zstd; commands: %q", f.img.URL, fake.Commands())
	}
}

// TestWriteImagePullFallsBack: a host that cannot pull gets the image
// pushed, decompressed by the worker.
func TestWriteImagePullFallsBack(t *testing.T) {
	tests := map[string]struct {
		prepare func(t *testing.T, f *fixture, acts *image.Activities) sshd.Options
	}{
		"no zstd on the host": {prepare: func(t *testing.T, f *fixture, acts *image.Activities) sshd.Options {
			f.writeSource(t, image.FormatZstd, true)
			return sshd.Options{Env: map[string]string{"PATH": pathWithout(t, "zstd")}}
		}},
		"no fetcher on the host": {prepare: func(t *testing.T, f *fixture, acts *image.Activities) sshd.Options {
			f.writeSource(t, image.FormatGzip, true)
			acts.PullFetchers = []string{"aria2c"}
			return sshd.Options{}
		}},
		"image is a file on the worker": {prepare: func(t *testing.T, f *fixture, acts *image.Activities) sshd.Options {
			f.writeSource(t, image.FormatXZ, false)
			return sshd.Options{}
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixtureData(t, compressible(2*mib+1), 4*mib)
			acts := *f.acts
			opts := tc.prepare(t, f, &acts)
			srv := startSSHD(t, f, opts)
			in := f.input(srv.Addr(), srv.HostKeyLine())
			in.Mode = image.ModePull
			r := execute(t, &acts, in, nil)
			if r.err != nil {
				t.Fatal(r.err)
			}
			f.checkDisk(t)
			if r.res.Mode != image.ModePush || r.res.SourceBytes == 0 {
				t.Errorf("result %+v: want a push by the worker", r.res)
			}
		})
	}
}

// pathWithout makes a directory of links to every program on PATH but
// the named ones, for a host that lacks them.
func pathWithout(t *testing.T, missing ...string) string {
	dir := t.TempDir()
	skip := map[string]bool{}
	for _, m := range missing {
		skip[m] = true
	}
	for _, d := range strings.Split(sshd.DefaultPath, ":") {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if skip[e.Name()] {
				continue
			}
			_ = os.Symlink(filepath.Join(d, e.Name()), filepath.Join(dir, e.Name())) // first one wins
		}
	}
	return dir
}

// dropServer serves f.dir but cuts the first GET that asks for more than
// 16 bytes off after `after` bytes, with the connection: the image server
// going away mid-stream. It records the Range headers it saw.
type dropServer struct {
	mu     sync.Mutex
	ranges []string
	drops  int
}

func (d *dropServer) handler(dir string, after int64) http.Handler {
	fs := http.FileServer(http.Dir(dir))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		d.ranges = append(d.ranges, r.Header.Get("Range"))
		drop := d.drops == 0 && r.Header.Get("Range") != "bytes=0-15"
		if drop {
			d.drops++
		}
		d.mu.Unlock()
		if !drop {
			fs.ServeHTTP(w, r)
			return
		}
		fs.ServeHTTP(&cutWriter{ResponseWriter: w, left: after}, r)
	})
}

func (d *dropServer) lastRange() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ranges[len(d.ranges)-1]
}

// cutWriter passes on `left` bytes of the body, then closes the
// connection under the handler.
type cutWriter struct {
	http.ResponseWriter
	left int64
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, _ := c.ResponseWriter.Write(p)
	c.left -= int64(n)
	if c.left == 0 {
		c.ResponseWriter.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(c.ResponseWriter).Hijack()
		if err == nil {
			conn.Close()
		}
		return n, net.ErrClosed
	}
	return n, nil
}

// TestWriteImageResumeAfterSourceDrop: the image server drops the
// connection in the third 1 MiB segment; the retry, given the last
// heartbeat, resumes after the committed segments and finishes.
func TestWriteImageResumeAfterSourceDrop(t *testing.T) {
	for _, mode := range []string{image.ModePush, image.ModePull} {
		for _, format := range []string{image.FormatRaw, image.FormatZstd} {
			t.Run(mode+"/"+format, func(t *testing.T) {
				f := newFixtureData(t, compressible(5*mib+777), 8*mib)
				file := compress(t, format, f.data)
				if err := os.WriteFile(filepath.Join(f.dir, "os.img"), file, 0o644); err != nil {
					t.Fatal(err)
				}
				// Cut at about 2.5 MiB of raw image.
				cut := int64(len(file)) * (2*mib + mib/2) / int64(len(f.data))
				ds := &dropServer{}
				f.img.URL = httpServer(t, ds.handler(f.dir, cut)) + "/os.img"
				srv := startSSHD(t, f, sshd.Options{})
				in := f.input(srv.Addr(), srv.HostKeyLine())
				in.Mode = mode

				first := execute(t, f.acts, in, nil)
				if first.err == nil {
					t.Fatal("first attempt succeeded through a dropped image server connection")
				}
				var ae *temporal.ApplicationError
				if errors.As(first.err, &ae) && ae.NonRetryable() {
					t.Fatalf("first attempt failed non-retryably: %v", first.err)
				}
				last := first.heartbeats[len(first.heartbeats)-1]
				if last.Offset != mib && last.Offset != 2*mib {
					t.Fatalf("first attempt's last heartbeat at %d, want %d or %d", last.Offset, mib, 2*mib)
				}
				second := execute(t, f.acts, in, &last)
				if second.err != nil {
					t.Fatalf("second attempt: %v", second.err)
				}
				f.checkDisk(t)
				if second.res.ResumedFrom != last.Offset || second.res.Bytes != f.img.Size-last.Offset {
					t.Errorf("second attempt resumed from %d and wrote %d, want %d and %d", second.res.ResumedFrom, second.res.Bytes, last.Offset, f.img.Size-last.Offset)
				}
				// A raw image is fetched from the offset on; a compressed one
				// from its start (the prefix is decompressed and discarded).
				want := fmt.Sprintf("bytes=%d-", last.Offset)
				if format != image.FormatRaw {
					want = ""
				}
				if got := ds.lastRange(); got != want {
					t.Errorf("second attempt fetched with Range %q, want %q", got, want)
				}
			})
		}
	}
}

// TestWriteImageResumeCompressedPush: the SSH connection drops in the
// middle of a zstd image; the retry verifies the prefix it discards
// against the saved hash state, and starts over when it does not match.
func TestWriteImageResumeCompressedPush(t *testing.T) {
	for _, changed := range []bool{false, true} {
		t.Run("image changed="+strconv.FormatBool(changed), func(t *testing.T) {
			f := newFixtureData(t, compressible(5*mib+777), 8*mib)
			f.writeSource(t, image.FormatZstd, false)
			fake := sshd.StartFake(t, sshd.FakeOptions{AuthorizedKeys: []ssh.PublicKey{f.key.Public()}, DropAfterStdin: 2*mib + mib/2})
			in := f.input(fake.Addr(), fake.HostKeyLine())
			first := execute(t, f.acts, in, nil)
			if first.err == nil {
				t.Fatal("first attempt succeeded through a dropped connection")
			}
			last := first.heartbeats[len(first.heartbeats)-1]
			if last.Offset == 0 || last.Format != image.FormatZstd {
				t.Fatalf("last heartbeat %+v: want progress on a zstd image", last)
			}
			if changed {
				// Another image of the same size and digest would be
				// impossible; change the first byte of the saved state's
				// data instead by replacing the image's first MiB.
				copy(f.data[:16], bytes.Repeat([]byte{0x5a}, 16))
				f.writeSource(t, image.FormatZstd, false)
				sum := sha256.Sum256(f.data)
				f.img.SHA256 = hex.EncodeToString(sum[:])
				in.Image = f.img
			}
			second := execute(t, f.acts, in, &last)
			if second.err != nil {
				t.Fatalf("second attempt: %v", second.err)
			}
			f.checkDisk(t)
			want := last.Offset
			if changed {
				want = 0
			}
			if second.res.ResumedFrom != want {
				t.Errorf("second attempt resumed from %d, want %d", second.res.ResumedFrom, want)
			}
		})
	}
}

// TestWriteImageFaults: each fault is a clear, typed error, retryable only
// where a retry can help, and never a success.
func TestWriteImageFaults(t *testing.T) {
	type tc struct {
		modes     []string
		prepare   func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options
		errType   string // "" with retryable: any retryable error
		retryable bool
		errHas    []string
	}
	both := []string{image.ModePush, image.ModePull}
	tests := map[string]tc{
		"compressed image cut short": {modes: both,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				file := f.writeSource(t, image.FormatZstd, true)
				in.Image.URL = f.img.URL
				os.WriteFile(filepath.Join(f.dir, "os.img"), file[:len(file)/2], 0o644)
				return sshd.Options{}
			},
			errType: activities.ErrTypeImageTruncated,
		},
		"compressed image corrupt": {modes: both,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				// The CRC-32 in the gzip trailer no longer fits.
				file := f.writeSource(t, image.FormatGzip, true)
				in.Image.URL = f.img.URL
				file[len(file)-8] ^= 0xff
				os.WriteFile(filepath.Join(f.dir, "os.img"), file, 0o644)
				return sshd.Options{}
			},
			errType: image.ErrTypeImageCorrupt,
		},
		"raw image truncated (no content-length)": {modes: both,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				in.Image.URL = httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Write(f.data[:mib])
					w.(http.Flusher).Flush()
					w.Write(f.data[mib : mib+100])
				})) + "/os.raw"
				return sshd.Options{}
			},
			errType: activities.ErrTypeImageTruncated, errHas: []string{"1048676"},
		},
		"raw image larger than declared": {modes: both,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				f.writeSource(t, image.FormatRaw, true)
				in.Image.URL = f.img.URL
				in.Image.Size -= 10
				return sshd.Options{}
			},
			errType: activities.ErrTypeImageSizeMismatch,
		},
		"compressed image larger than declared": {modes: both,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				f.writeSource(t, image.FormatXZ, true)
				in.Image.URL = f.img.URL
				in.Image.Size -= 10
				return sshd.Options{}
			},
			errType: activities.ErrTypeImageSizeMismatch,
		},
		"compressed image smaller than declared": {modes: both,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				f.writeSource(t, image.FormatGzip, true)
				in.Image.URL = f.img.URL
				in.Image.Size += 10
				return sshd.Options{}
			},
			errType: activities.ErrTypeImageTruncated,
		},
		"http 404": {modes: both,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				in.Image.URL = f.serve(t) + "/nope.img"
				return sshd.Options{}
			},
			errType: activities.ErrTypeImageNotFound, errHas: []string{"404"},
		},
		"http 500": {modes: both,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				in.Image.URL = httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					http.Error(w, "oops", http.StatusInternalServerError)
				})) + "/os.img"
				return sshd.Options{}
			},
			retryable: true, errHas: []string{"500"},
		},
		"image server refuses connections": {modes: both,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				in.Image.URL = "http://" + l.Addr().String() + "/os.img"
				l.Close()
				return sshd.Options{}
			},
			retryable: true, errHas: []string{"connect"},
		},
		"disk full": {modes: both,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				// sshd runs in a private mount namespace with a 1 MiB tmpfs
				// holding an 8 MiB sparse disk file: dd gets ENOSPC.
				f.writeSource(t, image.FormatRaw, true)
				in.Image.URL = f.img.URL
				small := filepath.Join(f.dir, "small")
				os.Mkdir(small, 0o755)
				in.Disk = filepath.Join(small, "disk")
				return sshd.Options{Wrapper: []string{"unshare", "--mount", "--propagation", "private", "--",
					"sh", "-c", `mount -t tmpfs -o size=1m tmpfs "$1" && truncate -s 8M "$1/disk" && shift && exec "$@"`, "sh", small}}
			},
			errType: image.ErrTypeDiskFull, errHas: []string{"No space left on device"},
		},
		"image larger than the disk": {modes: both,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				f.writeSource(t, image.FormatGzip, true)
				in.Image.URL = f.img.URL
				os.Truncate(f.disk, f.img.Size-1)
				return sshd.Options{}
			},
			errType: activities.ErrTypeDiskTooSmall,
		},
		"disk missing": {modes: both,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				f.writeSource(t, image.FormatRaw, true)
				in.Image.URL = f.img.URL
				in.Disk = "/dev/nonexistent-disk"
				return sshd.Options{}
			},
			errType: activities.ErrTypeDiskNotFound,
		},
		"wrong expected digest": {modes: both,
			prepare: func(t *testing.T, f *fixture, in *image.WriteInput) sshd.Options {
				f.writeSource(t, image.FormatZstd, true)
				in.Image.URL = f.img.URL
				in.Image.SHA256 = strings.Repeat("ab", 32)
				return sshd.Options{}
			},
			errType: activities.ErrTypeImageChecksumMismatch, errHas: []string{strings.Repeat("ab", 32), "got "},
		},
	}
	for name, tc := range tests {
		modes := slices.Clone(tc.modes)
		// And with rackflow-diskhelper writing on the host.
		for _, m := range tc.modes {
			modes = append(modes, m+"+helper")
		}
		for _, mode := range modes {
			t.Run(name+"/"+mode, func(t *testing.T) {
				f := newFixtureData(t, compressible(2*mib+12345), 4*mib)
				in := f.input("", "")
				opts := tc.prepare(t, f, &in)
				in.Mode = mode
				if m, ok := strings.CutSuffix(mode, "+helper"); ok {
					in.Mode, f.acts.DiskHelper = m, helperPath
				}
				srv := startSSHD(t, f, opts)
				in.Target.Addr, in.Target.HostKey = srv.Addr(), srv.HostKeyLine()
				r := execute(t, f.acts, in, nil)
				if r.err == nil {
					t.Fatalf("WriteImage succeeded: %+v", r.res)
				}
				var ae *temporal.ApplicationError
				if tc.retryable {
					if errors.As(r.err, &ae) && ae.NonRetryable() {
						t.Fatalf("want a retryable error, got %v", r.err)
					}
				} else {
					ae = wantAppError(t, r.err, tc.errType, true)
				}
				for _, s := range tc.errHas {
					if !strings.Contains(r.err.Error(), s) {
						t.Errorf("error %q lacks %q", r.err, s)
					}
				}
				if tc.errType == activities.ErrTypeImageChecksumMismatch {
					var want, got string
					if err := ae.Details(&want, &got); err != nil || want != in.Image.SHA256 || len(got) != 64 {
						t.Errorf("checksum error details: %q, %q (%v): want both digests", want, got, err)
					}
				}
			})
		}
	}
}

// TestWriteImagePullHeartbeats looks at a heartbeat taken in the middle
// of a pull from a slow image server (1 MiB/s): it names the segments the
// host's dd has confirmed, with a rate and an ETA.
func TestWriteImagePullHeartbeats(t *testing.T) {
	f := newFixture(t, 3*mib, 4*mib)
	stop := make(chan struct{})
	var stopOnce sync.Once
	f.img.URL = httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(f.data)))
		if r.Header.Get("Range") == "bytes=0-15" {
			http.ServeContent(w, r, "os.img", time.Time{}, bytes.NewReader(f.data))
			return
		}
		for off := 0; off < len(f.data); off += mib / 20 {
			if off >= mib+mib/2 {
				// Half a second after the first segment went out, in the
				// middle of the second.
				stopOnce.Do(func() { time.AfterFunc(300*time.Millisecond, func() { close(stop) }) })
			}
			if _, err := w.Write(f.data[off:min(off+mib/20, len(f.data))]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(50 * time.Millisecond)
		}
	})) + "/os.img"
	srv := startSSHD(t, f, sshd.Options{})
	in := f.input(srv.Addr(), srv.HostKeyLine())
	in.Mode = image.ModePull
	var mu sync.Mutex
	var reports []api.ImageProgress
	f.acts.ReportEvery = 200 * time.Millisecond
	f.acts.Report = func(_ context.Context, p api.ImageProgress) error {
		mu.Lock()
		reports = append(reports, p)
		mu.Unlock()
		return nil
	}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(f.acts)
	env.SetWorkerStopChannel(stop)
	var hb []image.Progress
	env.SetOnActivityHeartbeatListener(func(_ *activity.Info, d converter.EncodedValues) {
		var p image.Progress
		_ = d.Get(&p)
		mu.Lock()
		hb = append(hb, p)
		mu.Unlock()
	})
	if _, err := env.ExecuteActivity(f.acts.WriteImage, in); err != nil {
		t.Fatal(err)
	}
	f.checkDisk(t)
	mu.Lock()
	defer mu.Unlock()
	if len(hb) < 2 {
		t.Fatalf("heartbeats %+v: want the first and the flushed one", hb)
	}
	got := hb[1]
	if got.Offset != mib || got.MBps < 0.3 || got.MBps > 3 || got.ETASeconds < 0.5 || got.ETASeconds > 10 || got.Mode != image.ModePull || got.Format != image.FormatRaw {
		t.Errorf("heartbeat in the middle of the second segment %+v: want offset %d, about 1 MB/s, 2 s to go, mode pull, format raw", got, mib)
	}
	// The workflow is told the same progress (for its status query): a
	// report in the middle of the stream, and one when the read-back
	// starts.
	var mid, verify bool
	for _, r := range reports {
		if r.Total != f.img.Size || r.Mode != image.ModePull || r.At.IsZero() {
			t.Errorf("report %+v: want progress out of %d in mode pull, with its time", r, f.img.Size)
		}
		mid = mid || (r.Phase == "write" && r.Offset > 0 && r.Offset < r.Total && r.MBps > 0 && r.ETASeconds > 0)
		verify = verify || (r.Phase == "verify" && r.Offset == r.Total)
	}
	if !mid || !verify {
		t.Errorf("reports %+v: want one mid-stream with rate and ETA, and one at the read-back", reports)
	}
}

// TestWriteImageSHA512: an image published with a sha512 is checked with
// it on the fly, read back with it on the host (openssl, sha512sum or the
// helper), resumes with a sha512 hash state, and a wrong one is refused.
func TestWriteImageSHA512(t *testing.T) {
	for _, tc := range []struct {
		name, mode, format string
		helper, noOpenSSL  bool
	}{
		{"push raw", image.ModePush, image.FormatRaw, false, false},
		{"push raw, sha512sum", image.ModePush, image.FormatRaw, false, true},
		{"push zstd, helper", image.ModePush, image.FormatZstd, true, false},
		{"pull gzip", image.ModePull, image.FormatGzip, false, false},
		{"pull raw, helper", image.ModePull, image.FormatRaw, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixtureData(t, compressible(3*mib+100), 4*mib)
			f.writeSource(t, tc.format, tc.mode == image.ModePull)
			sum := sha512.Sum512(f.data)
			want := hex.EncodeToString(sum[:])
			if tc.helper {
				f.acts.DiskHelper = helperPath
			}
			var opts sshd.Options
			if tc.noOpenSSL {
				opts.PathPrefix = []string{pathWithout(t, "openssl")}
			}
			srv := startSSHD(t, f, opts)
			in := f.input(srv.Addr(), srv.HostKeyLine())
			in.Mode = tc.mode
			in.Image.SHA256, in.Image.SHA512 = "", want
			r := execute(t, f.acts, in, nil)
			if r.err != nil {
				t.Fatalf("WriteImage: %v", r.err)
			}
			f.checkDisk(t)
			if r.res.Digest != want || r.res.Helper != tc.helper {
				t.Errorf("digest %s helper %v, want the sha512 %s and helper %v", r.res.Digest, r.res.Helper, want, tc.helper)
			}
			if tc.mode == image.ModePush {
				// Resume at 1 MiB with the sha512 state a heartbeat there
				// holds: the rest is hashed on top of it and matches.
				h := sha512.New()
				h.Write(f.data[:mib])
				state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				mid := &image.Progress{Offset: mib, Total: f.img.Size, HashState: state, Mode: tc.mode, Format: tc.format}
				again := execute(t, f.acts, in, mid)
				if again.err != nil || again.res.ResumedFrom != mid.Offset || again.res.Digest != want {
					t.Fatalf("resumed at %d: %+v, %v", mid.Offset, again.res, again.err)
				}
			}
			in.Image.SHA512 = strings.Repeat("ab", 64)
			bad := execute(t, f.acts, in, nil)
			ae := wantAppError(t, bad.err, activities.ErrTypeImageChecksumMismatch, true)
			if !strings.Contains(ae.Error(), "sha512 mismatch") {
				t.Errorf("error %q does not name sha512", ae.Error())
			}
		})
	}
}

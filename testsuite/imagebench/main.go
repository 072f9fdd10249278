// Command imagebench measures how fast rackflow writes an OS image onto a
// disk over SSH, against what the same machine does with OpenSSH's client
// and with dd alone, and prints one table. It is what `make bench-image`
// runs. Everything happens on loopback: a real OpenSSH sshd started with
// testsuite/sshd stands in for the host's live system, an in-process HTTP
// server for the image server, and a sparse file in a temporary directory
// for the disk. It needs about 3 GiB of space in -dir and removes it all.
//
// It is not a load test or a regression gate: one run, one table, numbers
// of this machine. rackflow's rows run WriteImage in a child process, so
// the peak memory (maxrss) of the worker side can be read from rusage.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/testsuite"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities/image"
	"github.com/rackflow/rackflow/activities/remote"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/sshd"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "child" {
		child(os.Args[2])
		return
	}
	dir := flag.String("dir", os.TempDir(), "where to put the images and disks (needs ~3 GiB)")
	sizeMiB := flag.Int("size", 1024, "image size in MiB")
	runs := flag.Int("runs", 3, "runs per row (the median is shown)")
	flag.BoolVar(&pin, "pin", false, "two machines on one: the host's sshd on CPU 1, the sender (worker, ssh, dd) on CPU 0")
	flag.StringVar(&only, "rows", "", "run only the rows whose name matches this regexp (the baseline always runs)")
	flag.IntVar(&rounds, "rounds", 5, "interleaved rounds of the OpenSSH and raw push and pull (verified) rows")
	flag.StringVar(&perfDir, "perf", "", "record each rackflow run with `perf record -a -g` into this directory (the helper is built with symbols)")
	flag.Parse()
	if err := run(*dir, int64(*sizeMiB)<<20, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "imagebench:", err)
		os.Exit(1)
	}
}

var (
	pin     bool   // -pin
	only    string // -rows
	rounds  int    // -rounds
	perfDir string // -perf
)

// sender is how the sending side's commands start: on CPU 0 with -pin.
func sender(args ...string) *exec.Cmd {
	if pin {
		args = append([]string{"taskset", "-c", "0"}, args...)
	}
	return exec.Command(args[0], args[1:]...)
}

// childArgs is what the parent passes a child that runs one WriteImage.
type childArgs struct {
	In          image.WriteInput
	Key         string // private key PEM
	VerifyAfter bool
	MaxBps      int64
	Helper      string
}

type childResult struct {
	Res     image.WriteResult
	Err     string
	Seconds float64
}

// child runs one WriteImage as the worker would and prints the result.
func child(arg string) {
	var a childArgs
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		panic(err)
	}
	acts := &image.Activities{Dialer: &remote.Dialer{Secrets: secrets.Static{a.In.Target.Credential: {PrivateKey: a.Key}}}, VerifyAfterWrite: a.VerifyAfter, MaxBytesPerSecond: a.MaxBps, DiskHelper: a.Helper}
	if strings.HasPrefix(a.In.Image.URL, "/") {
		acts.ImageDir = filepath.Dir(a.In.Image.URL) // the bench's own files
	}
	var ts testsuite.WorkflowTestSuite
	ts.SetLogger(log.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	start := time.Now()
	v, err := env.ExecuteActivity(acts.WriteImage, a.In)
	r := childResult{Seconds: time.Since(start).Seconds()}
	if err != nil {
		r.Err = err.Error()
	} else if err := v.Get(&r.Res); err != nil {
		r.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(r)
}

type bench struct {
	dir, disk  string
	size       int64
	srv        *sshd.Server
	keyPEM     string
	keyFile    string
	hostKey    string
	knownHosts string
	httpURL    string
	helper     string // rackflow-diskhelper, built for this machine
	useHelper  bool
}

// row is one line of the table.
type row struct {
	name   string
	bytes  int64 // raw bytes delivered per run
	secs   []float64
	maxRSS int64     // KiB, rackflow rows only
	cpu    []float64 // worker CPU seconds (user+system), rackflow rows only
	note   string
}

func (r row) median() float64 {
	s := append([]float64(nil), r.secs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func (r row) mbps() float64 { return float64(r.bytes) / r.median() / 1e6 }

func run(parent string, size int64, runs int) error {
	for _, tool := range []string{"ssh", "dd", "sha256sum", "openssl", "gzip", "zstd", "xz"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (Debian packages: openssh-client coreutils openssl gzip zstd xz-utils)", tool)
		}
	}
	dir, err := os.MkdirTemp(parent, "imagebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	b := &bench{dir: dir, disk: filepath.Join(dir, "disk"), size: size}
	step := func(what string) func() {
		fmt.Fprintf(os.Stderr, "%s ...", what)
		t := time.Now()
		return func() { fmt.Fprintf(os.Stderr, " %.1fs\n", time.Since(t).Seconds()) }
	}

	done := step(fmt.Sprintf("making a %d MiB image and its gzip, zstd and xz forms", size>>20))
	sum, err := makeImage(filepath.Join(dir, "os.raw"), size)
	if err != nil {
		return err
	}
	small := int64(256 << 20)
	smallSum, err := prefixFile(filepath.Join(dir, "os.raw"), filepath.Join(dir, "small.raw"), small)
	if err != nil {
		return err
	}
	compressed := map[string]int64{}
	for _, c := range []struct{ format, ext, cmd string }{
		{image.FormatGzip, "gz", "gzip -c -1"},
		{image.FormatZstd, "zst", "zstd -c -q -3 -T0"},
		{image.FormatXZ, "xz", "xz -c -1 -T0"},
	} {
		out := filepath.Join(dir, "os.raw."+c.ext)
		cmd := exec.Command("sh", "-c", c.cmd+" < os.raw > "+filepath.Base(out))
		cmd.Dir = dir
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w", c.cmd, err)
		}
		st, err := os.Stat(out)
		if err != nil {
			return err
		}
		compressed[c.format] = st.Size()
	}
	b.helper = filepath.Join(dir, "rackflow-diskhelper")
	ldflags := "-ldflags=-s -w"
	if perfDir != "" {
		ldflags = "-ldflags=" // perf needs the symbol table
	}
	hb := exec.Command("go", "build", "-trimpath", ldflags, "-o", b.helper, "github.com/rackflow/rackflow/activities/image/cmd/rackflow-diskhelper")
	hb.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := hb.CombinedOutput(); err != nil {
		return fmt.Errorf("build diskhelper: %v: %s", err, out)
	}
	b.useHelper = true
	done()

	// sshd, its client key for both OpenSSH's ssh and rackflow, and the
	// image server.
	signer, pemKey, err := sshd.NewKey()
	if err != nil {
		return err
	}
	b.keyPEM = string(pemKey)
	b.keyFile = filepath.Join(dir, "client_key")
	if err := os.WriteFile(b.keyFile, pemKey, 0o600); err != nil {
		return err
	}
	sshdDir := filepath.Join(dir, "sshd")
	os.Mkdir(sshdDir, 0o700)
	sopts := sshd.Options{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}}
	if pin {
		if numCPU() < 2 {
			return fmt.Errorf("-pin needs two CPUs")
		}
		sopts.Wrapper = []string{"taskset", "-c", "1"}
	}
	b.srv, err = sshd.Run(ctx, sshdDir, sopts)
	if err != nil {
		return err
	}
	defer b.srv.Close()
	b.hostKey = b.srv.HostKeyLine()
	host, port, _ := net.SplitHostPort(b.srv.Addr())
	b.knownHosts = filepath.Join(dir, "known_hosts")
	os.WriteFile(b.knownHosts, []byte(fmt.Sprintf("[%s]:%s %s\n", host, port, b.hostKey)), 0o644)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	go hs.Serve(l)
	defer hs.Close()
	b.httpURL = "http://" + l.Addr().String()

	img := filepath.Join(dir, "os.raw")
	var rows []row
	// addRow adds r, or its runs to the row of the same name: the head
	// rows run in interleaved rounds, so a machine whose speed drifts
	// during the bench slows them all alike.
	addRow := func(r row) {
		for i := range rows {
			if rows[i].name == r.name {
				rows[i].secs = append(rows[i].secs, r.secs...)
				rows[i].cpu = append(rows[i].cpu, r.cpu...)
				rows[i].maxRSS = max(rows[i].maxRSS, r.maxRSS)
				return
			}
		}
		rows = append(rows, r)
	}
	var onlyRE *regexp.Regexp
	if only != "" {
		if onlyRE, err = regexp.Compile(only); err != nil {
			return fmt.Errorf("-rows: %w", err)
		}
	}
	skip := func(name string) bool {
		return onlyRE != nil && !onlyRE.MatchString(name) && !strings.Contains(name, "OpenSSH")
	}
	shell := func(name, cmd string, n int) error {
		if skip(name) {
			return nil
		}
		done := step(name)
		defer done()
		r := row{name: name, bytes: size}
		for i := 0; i < n; i++ {
			if err := b.freshDisk(size); err != nil {
				return err
			}
			c := sender("sh", "-c", cmd)
			c.Dir = dir
			var stderr bytes.Buffer
			c.Stderr = &stderr
			t := time.Now()
			if err := c.Run(); err != nil {
				return fmt.Errorf("%s: %v: %s", cmd, err, stderr.String())
			}
			r.secs = append(r.secs, time.Since(t).Seconds())
		}
		addRow(r)
		return nil
	}
	var maxBps int64 // a simulated link, for the rows that set it
	rackflow := func(name, url, mode string, sz int64, sha string, n int, verifyAfter bool) error {
		if skip(name) {
			return nil
		}
		done := step(name)
		defer done()
		r := row{name: name, bytes: sz}
		for i := 0; i < n; i++ {
			if err := b.freshDisk(sz); err != nil {
				return err
			}
			stopPerf, err := startPerf(name)
			if err != nil {
				return err
			}
			res, rss, cpu, err := b.child(verifyAfter, maxBps, image.WriteInput{
				Host:   "bench",
				Target: remote.Target{Addr: b.srv.Addr(), Credential: "ssh/bench", HostKey: b.hostKey},
				Image:  specImage(url, sz, sha),
				Disk:   b.disk,
				Mode:   mode,
			})
			stopPerf()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if res.Res.Mode != mode || res.Res.Helper != b.useHelper {
				return fmt.Errorf("%s: ran in mode %s, helper %v", name, res.Res.Mode, res.Res.Helper)
			}
			r.secs = append(r.secs, res.Seconds)
			r.maxRSS = max(r.maxRSS, rss)
			r.cpu = append(r.cpu, cpu)
			if r.note == "" {
				r.note = fmt.Sprintf("stream %.0f MB/s, verify tail %s", res.Res.MBps, res.Res.VerifyDuration)
			}
		}
		addRow(r)
		return nil
	}
	sshCmd := func(cipher string) string {
		c := ""
		if cipher != "" {
			c = " -c " + cipher
		}
		return fmt.Sprintf("ssh -p %s -i %s -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes%s root@%s 'dd of=%s bs=4M' < os.raw",
			port, b.keyFile, b.knownHosts, c, host, b.disk)
	}

	steps := []func() error{
		func() error {
			return shell("local dd copy (oflag=direct, fsync)", "dd if=os.raw of=disk bs=4M oflag=direct conv=notrunc,fsync status=none", runs)
		},
		func() error {
			return shell("local dd copy (page cache, fsync)", "dd if=os.raw of=disk bs=4M conv=notrunc,fsync status=none", runs)
		},
		func() error { return shell("sha256sum alone", "sha256sum os.raw >/dev/null", runs) },
		func() error {
			return shell("openssl dgst -sha256 alone", "openssl dgst -sha256 os.raw >/dev/null", runs)
		},
		func() error {
			// The comparison the goal is about, in interleaved rounds.
			for i := 0; i < rounds; i++ {
				if err := shell("OpenSSH ssh -c aes128-gcm | dd", sshCmd("aes128-gcm@openssh.com"), 1); err != nil {
					return err
				}
				if err := shell("OpenSSH ssh (default cipher) | dd", sshCmd(""), 1); err != nil {
					return err
				}
				if err := rackflow("rackflow push raw (verified)", img, image.ModePush, size, sum, 1, false); err != nil {
					return err
				}
				if err := rackflow("rackflow pull raw (verified)", b.httpURL+"/os.raw", image.ModePull, size, sum, 1, false); err != nil {
					return err
				}
			}
			return nil
		},
		func() error {
			b.useHelper = false
			defer func() { b.useHelper = true }()
			return rackflow("rackflow push raw (verified), dd pipeline", img, image.ModePush, size, sum, runs, false)
		},
		func() error {
			return rackflow("rackflow push raw (verify after write)", img, image.ModePush, size, sum, runs, true)
		},
		func() error {
			b.useHelper = false
			defer func() { b.useHelper = true }()
			return rackflow("rackflow pull raw (verified), dd pipeline", b.httpURL+"/os.raw", image.ModePull, size, sum, runs, false)
		},
		func() error {
			return rackflow("rackflow push zstd (verified)", filepath.Join(dir, "os.raw.zst"), image.ModePush, size, sum, runs, false)
		},
		func() error {
			return rackflow("rackflow pull zstd (verified)", b.httpURL+"/os.raw.zst", image.ModePull, size, sum, runs, false)
		},
		func() error {
			return rackflow("rackflow push gzip (verified)", filepath.Join(dir, "os.raw.gz"), image.ModePush, size, sum, runs, false)
		},
		func() error {
			return rackflow("rackflow pull gzip (verified)", b.httpURL+"/os.raw.gz", image.ModePull, size, sum, runs, false)
		},
		func() error {
			return rackflow("rackflow push xz (verified)", filepath.Join(dir, "os.raw.xz"), image.ModePush, size, sum, 1, false)
		},
		func() error {
			return rackflow("rackflow pull xz (verified)", b.httpURL+"/os.raw.xz", image.ModePull, size, sum, 1, false)
		},
		// A 1 Gb/s link (curl --limit-rate 119 MiB/s on the wire bytes):
		// what compression buys where the network is the limit.
		func() error {
			maxBps = 125e6
			return rackflow("rackflow pull raw over a 1 Gb/s link", b.httpURL+"/os.raw", image.ModePull, size, sum, 1, false)
		},
		func() error {
			defer func() { maxBps = 0 }()
			return rackflow("rackflow pull zstd over a 1 Gb/s link", b.httpURL+"/os.raw.zst", image.ModePull, size, sum, 1, false)
		},
		func() error {
			return rackflow("rackflow push raw 256 MiB (memory)", filepath.Join(dir, "small.raw"), image.ModePush, small, smallSum, runs, false)
		},
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	os.Remove(b.disk)

	var baseline, plain float64
	for _, r := range rows {
		if strings.Contains(r.name, "OpenSSH ssh -c aes128-gcm") {
			baseline = r.mbps()
		}
		if strings.Contains(r.name, "OpenSSH ssh (default cipher)") {
			plain = r.mbps()
		}
	}
	cpu, _ := os.ReadFile("/proc/cpuinfo")
	model := ""
	for _, line := range strings.Split(string(cpu), "\n") {
		if strings.HasPrefix(line, "model name") {
			_, model, _ = strings.Cut(line, ":")
			break
		}
	}
	fmt.Printf("\nimage %d MiB raw (25%% random, rest zeros: gzip -1 %d MiB, zstd -3 %d MiB, xz -1 %d MiB); disk: sparse file in %s\n",
		size>>20, compressed[image.FormatGzip]>>20, compressed[image.FormatZstd]>>20, compressed[image.FormatXZ]>>20, parent)
	share := "sshd and the worker share them"
	if pin {
		share = "pinned as two machines: the host's sshd (and what it runs) on CPU 1, the sender (worker, ssh, dd) on CPU 0"
	}
	fmt.Printf("machine: %d CPUs,%s; %s; median of %d runs (xz: 1; OpenSSH and rackflow raw push and pull (verified): %d interleaved rounds); MB/s = raw MB (10^6) / wall time\n", numCPU(), model, share, runs, rounds)
	fmt.Printf("vs ssh: against the baseline command ssh host 'dd of=DISK bs=4M' < image with OpenSSH's client as it comes (default cipher); vs ssh aes-gcm: the same, told to use its fastest cipher here\n\n")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "what\tMB/s\tvs ssh\tvs ssh aes-gcm\tworker peak RSS\tworker CPU s/GiB\tsecs\tnote\t")
	for _, r := range rows {
		rss := "-"
		if r.maxRSS > 0 {
			rss = fmt.Sprintf("%.0f MiB", float64(r.maxRSS)/1024)
		}
		ratio, ratioPlain := "-", "-"
		if baseline > 0 {
			ratio = fmt.Sprintf("%.2f", r.mbps()/baseline)
		}
		if plain > 0 {
			ratioPlain = fmt.Sprintf("%.2f", r.mbps()/plain)
		}
		cpu := "-"
		if len(r.cpu) > 0 {
			c := append([]float64(nil), r.cpu...)
			sort.Float64s(c)
			cpu = fmt.Sprintf("%.2f", c[len(c)/2]/(float64(r.bytes)/(1<<30)))
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\t%.2f\t%s\t\n", r.name, r.mbps(), ratioPlain, ratio, rss, cpu, r.median(), r.note)
	}
	tw.Flush()
	fmt.Println("\nrackflow rows include dialing, the disk check, the helper's upload and the read-back on the host (overlapped with the write; 'verify tail' is what remains after it); the OpenSSH and dd rows neither verify nor (OpenSSH) fsync.")
	fmt.Println("rackflow rows run rackflow-diskhelper on the host (as a worker installed by make build does) except the 'dd pipeline' rows: one dd per segment and dd | openssl for the read-back.")
	return nil
}

// startPerf records the whole machine with perf while one rackflow run
// goes, into -perf's directory, and returns what stops it; with no -perf,
// it does nothing.
func startPerf(name string) (stop func(), err error) {
	if perfDir == "" {
		return func() {}, nil
	}
	perfRuns++
	tag := strings.Trim(regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(name), "-"), "-")
	out := filepath.Join(perfDir, fmt.Sprintf("%02d-%s.data", perfRuns, tag))
	cmd := exec.Command("perf", "record", "-a", "-g", "-q", "-o", out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf record: %w", err)
	}
	time.Sleep(500 * time.Millisecond) // let it set up its buffers
	return func() {
		cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil && stderr.Len() > 0 {
			fmt.Fprintf(os.Stderr, "perf record: %v: %s\n", err, stderr.String())
		}
	}, nil
}

var perfRuns int

func numCPU() int {
	n := 0
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "processor") {
			n++
		}
	}
	return n
}

// freshDisk makes the disk a new sparse file, so every run allocates the
// same way.
func (b *bench) freshDisk(size int64) error {
	os.Remove(b.disk)
	f, err := os.Create(b.disk)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(size + 1<<20)
}

// child runs one WriteImage in a child process and returns its result and
// peak RSS in KiB.
func (b *bench) child(verifyAfter bool, maxBps int64, in image.WriteInput) (childResult, int64, float64, error) {
	helper := ""
	if b.useHelper {
		helper = b.helper
	}
	arg, _ := json.Marshal(childArgs{In: in, Key: b.keyPEM, VerifyAfter: verifyAfter, MaxBps: maxBps, Helper: helper})
	exe, err := os.Executable()
	if err != nil {
		return childResult{}, 0, 0, err
	}
	cmd := sender(exe, "child", string(arg))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return childResult{}, 0, 0, fmt.Errorf("child: %v: %s", err, stderr.String())
	}
	var r childResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return r, 0, 0, fmt.Errorf("child output %q: %w", stdout.String(), err)
	}
	if r.Err != "" {
		return r, 0, 0, fmt.Errorf("WriteImage: %s", r.Err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	return r, ru.Maxrss, cpu, nil
}

// makeImage writes an image that compresses like an OS image with free
// space: in every 64 KiB, 16 KiB of random bytes and zeros.
func makeImage(path string, size int64) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	w := io.MultiWriter(f, h)
	buf := make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		clear(buf)
		for i := 0; i < len(buf); i += 64 << 10 {
			rand.Read(buf[i : i+16<<10])
		}
		if _, err := w.Write(buf[:min(int64(len(buf)), size-off)]); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), f.Close()
}

func prefixFile(src, dst string, n int64) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return "", err
	}
	defer out.Close()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(out, h), in, n); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), out.Close()
}

func specImage(url string, size int64, sha string) api.Image {
	return api.Image{URL: url, Size: size, SHA256: sha}
}

package qemu

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// ErrNoPackage is wrapped when apt cannot name or fetch a package (no
// package lists: run apt-get update).
var ErrNoPackage = errors.New("debian package not available")

// VirtioNetModules are the modules Debian builds as such that a virtio NIC
// needs, in load order (each needs the ones before it).
var VirtioNetModules = []string{
	"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
	"virtio_pci", "failover", "net_failover", "virtio_net",
}

// CacheDir is where downloads are kept between runs: $RACKFLOW_CACHE_DIR,
// else $XDG_CACHE_HOME/rackflow, else /var/cache/rackflow for root and
// ~/.cache/rackflow for others. It is created if missing.
func CacheDir() (string, error) {
	dir := os.Getenv("RACKFLOW_CACHE_DIR")
	if dir == "" {
		if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
			dir = filepath.Join(x, "rackflow")
		} else if os.Geteuid() == 0 {
			dir = "/var/cache/rackflow"
		} else {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("find cache dir: %w", err)
			}
			dir = filepath.Join(home, ".cache", "rackflow")
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create cache dir: %w", err)
	}
	return dir, nil
}

// Kernel is a Debian kernel image and the modules a test VM needs.
type Kernel struct {
	// Package is the Debian package it came from, e.g.
	// "linux-image-6.1.0-56-amd64".
	Package string
	// Vmlinuz is the path of the bzImage.
	Vmlinuz string
	// Modules maps a module name ("virtio_net") to its .ko file.
	Modules map[string]string
}

var kernelModules = append(slices.Clone(VirtioNetModules), BlockModules...)

// FetchKernel returns the kernel of Debian's current linux-image-amd64,
// downloading it with apt-get download (no install, so nothing of the host
// changes) and keeping only vmlinuz and the modules of kernelModules under
// cacheDir/kernel/<package>/. A cached kernel is reused; when apt cannot name
// the current package, the newest cached one is used.
func FetchKernel(ctx context.Context, cacheDir string) (Kernel, error) {
	base := filepath.Join(cacheDir, "kernel")
	pkg := os.Getenv("RACKFLOW_QEMU_KERNEL_PKG")
	var resolveErr error
	if pkg == "" {
		pkg, resolveErr = kernelPackage(ctx)
	}
	if resolveErr != nil {
		cached, _ := filepath.Glob(filepath.Join(base, "linux-image-*", ".complete"))
		if len(cached) == 0 {
			return Kernel{}, resolveErr
		}
		slices.Sort(cached)
		pkg = filepath.Base(filepath.Dir(cached[len(cached)-1]))
	}
	dir := filepath.Join(base, pkg)
	if !cachedKernel(dir) {
		if err := fetchDeb(ctx, pkg, dir, func(name string) (string, bool) {
			if strings.HasPrefix(name, "boot/vmlinuz-") {
				return "vmlinuz", true
			}
			if strings.HasPrefix(name, "lib/modules/") && strings.HasSuffix(name, ".ko") {
				mod := strings.TrimSuffix(path.Base(name), ".ko")
				if slices.Contains(kernelModules, mod) {
					return mod + ".ko", true
				}
			}
			return "", false
		}); err != nil {
			return Kernel{}, err
		}
	}
	k := Kernel{Package: pkg, Vmlinuz: filepath.Join(dir, "vmlinuz"), Modules: map[string]string{}}
	if _, err := os.Stat(k.Vmlinuz); err != nil {
		return Kernel{}, fmt.Errorf("kernel %s: no vmlinuz in the package", pkg)
	}
	for _, m := range kernelModules {
		f := filepath.Join(dir, m+".ko")
		if _, err := os.Stat(f); err != nil {
			return Kernel{}, fmt.Errorf("kernel %s: module %s not in the package (built in?)", pkg, m)
		}
		k.Modules[m] = f
	}
	return k, nil
}

// cachedKernel tells whether dir holds a complete kernel with every
// module of kernelModules: a cache from before a module was added is
// fetched again.
func cachedKernel(dir string) bool {
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
		return false
	}
	for _, m := range kernelModules {
		if _, err := os.Stat(filepath.Join(dir, m+".ko")); err != nil {
			return false
		}
	}
	return true
}

var dependsRE = regexp.MustCompile(`(?m)^\s*Depends:\s*(linux-image-[0-9][^\s]*-amd64)\s*$`)

// kernelPackage names the versioned kernel package linux-image-amd64
// currently depends on.
func kernelPackage(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "linux-image-amd64").Output()
	if m := dependsRE.FindSubmatch(out); err == nil && m != nil {
		return string(m[1]), nil
	}
	return "", fmt.Errorf("%w: apt-cache depends linux-image-amd64 names no kernel (err %v): run apt-get update", ErrNoPackage, err)
}

// Busybox returns a statically linked busybox for the initramfs: the host's
// own when it is static (package busybox-static installed), else
// busybox-static's, downloaded with apt-get download into
// cacheDir/busybox-static/ (the host's busybox package is left alone).
func Busybox(ctx context.Context, cacheDir string) (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if isStatic(p) {
			return p, nil
		}
	}
	dir := filepath.Join(cacheDir, "busybox-static")
	bin := filepath.Join(dir, "busybox")
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return bin, nil
	}
	err := fetchDeb(ctx, "busybox-static", dir, func(name string) (string, bool) {
		return "busybox", name == "bin/busybox" || name == "usr/bin/busybox"
	})
	if err != nil {
		return "", err
	}
	if !isStatic(bin) {
		return "", fmt.Errorf("busybox from busybox-static is not statically linked")
	}
	return bin, nil
}

// isStatic reports whether the file is an ELF executable without an
// interpreter, i.e. runs in an initramfs without a libc.
func isStatic(file string) bool {
	f, err := elf.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN
}

// fetchDeb downloads a package with apt-get download and writes the files
// keep selects (by path inside the package, without "./") flat into dir,
// under the names keep returns, then marks dir complete. dir appears whole
// or not at all, so an interrupted run never leaves a half cache.
func fetchDeb(ctx context.Context, pkg, dir string, keep func(name string) (string, bool)) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("fetch %s: %w", pkg, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".fetch-*")
	if err != nil {
		return fmt.Errorf("fetch %s: %w", pkg, err)
	}
	defer os.RemoveAll(tmp)
	dl := exec.CommandContext(ctx, "apt-get", "download", "-q", pkg)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: apt-get download %s: %v: %s", ErrNoPackage, pkg, err, bytes.TrimSpace(out))
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("%w: apt-get download %s left %d .deb files", ErrNoPackage, pkg, len(debs))
	}
	out := filepath.Join(tmp, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", debs[0])
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w (is dpkg installed?)", pkg, err)
	}
	extractErr := extractTar(bufio.NewReaderSize(stdout, 1<<20), out, keep)
	_, _ = io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", pkg, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if extractErr != nil {
		return fmt.Errorf("unpack %s: %w", pkg, extractErr)
	}
	if err := os.WriteFile(filepath.Join(out, ".complete"), []byte(filepath.Base(debs[0])+"\n"), 0o644); err != nil {
		return err
	}
	_ = os.RemoveAll(dir) // an incomplete leftover
	if err := os.Rename(out, dir); err != nil {
		return fmt.Errorf("fetch %s: %w", pkg, err)
	}
	return nil
}

func extractTar(r io.Reader, dst string, keep func(string) (string, bool)) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name, ok := keep(strings.TrimPrefix(h.Name, "./"))
		if !ok {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dst, filepath.Base(name)), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}

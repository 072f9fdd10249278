// Command rackflow-diskhelper writes an image stream onto a disk and reads
// it back, on the host being provisioned. rackflow's image stream uploads
// it over SSH into the live system when the host's architecture matches
// (it is static, under 2 MiB), and runs it in place of its shell
// pipeline of one dd per segment and `dd | openssl` for the read-back.
//
// It does the same work with fewer copies: the read-back hashes what it
// reads from the disk in-process instead of through a pipe, which on a
// two-core host halves the read-back's CPU time, and CPU is what a
// verified stream at wire speed runs short of.
//
//	rackflow-diskhelper version
//	rackflow-diskhelper write DISK START SIZE SEGMENT direct|buffered [pull]
//	rackflow-diskhelper verify DISK direct|buffered [sha256|sha512]
//	rackflow-diskhelper disks
//
// write copies stdin onto DISK from byte START to SIZE, one segment at a
// time: each segment is written, flushed to the device (fdatasync), and
// then its end offset printed on a line of stdout. It reads stdin a few
// blocks ahead of the disk, so the stream keeps coming while a block is
// written and a segment flushed. Segments start at
// START. Exit 5 when stdin ends before SIZE ("short segment"), 1 when the
// disk refuses a write (the message names the errno, e.g. "No space left
// on device").
//
// With pull (the host fetching the image itself, in rackflow's pull
// script), lines read "committed N", a short stream also prints
// "short N" (N: the bytes written in all), a disk error exits 3, and
// input past SIZE prints "long" and exits 6 — the script's own dd loop's
// conventions.
//
// verify reads offsets, one per line, from stdin; each says the disk is
// final up to there. It reads the disk from 0 up to each offset as it
// arrives and, at the end of stdin, prints the digest (sha256 unless
// told sha512) of all it read.
// Exit 3 when the disk cannot be read.
//
// disks prints the whole disks the kernel knows (/sys/block) as
// `lsblk -J -b -d -o NAME,SERIAL,WWN,SIZE,MODEL,TYPE,TRAN,RO` would, read
// from sysfs: the worker resolves root-device hints with it on live
// systems that have no lsblk (or no udev for it to read serials from).
//
// With direct, aligned blocks bypass the page cache (O_DIRECT), so what
// is written is on the device and what is hashed is what the device
// returns.
package main

import (
	"bufio"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
)

const (
	version  = "rackflow-diskhelper 3"
	bufSize  = 4 << 20
	align    = 4096
	pipeSize = 1 << 20
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var code int
	switch os.Args[1] {
	case "version":
		fmt.Println(version)
	case "write":
		pull := len(os.Args) == 8 && os.Args[7] == "pull"
		if len(os.Args) != 7 && !pull {
			usage()
		}
		code = write(os.Args[2], os.Args[3], os.Args[4], os.Args[5], os.Args[6], pull)
	case "disks":
		code = disks("/sys/block")
	case "verify":
		algo := "sha256"
		switch len(os.Args) {
		case 4:
		case 5:
			algo = os.Args[4]
		default:
			usage()
		}
		code = verify(os.Args[2], os.Args[3], algo)
	default:
		usage()
	}
	os.Exit(code)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: rackflow-diskhelper version | write DISK START SIZE SEGMENT direct|buffered | verify DISK direct|buffered [sha256|sha512] | disks")
	os.Exit(2)
}

func fail(code int, format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "rackflow-diskhelper: "+format+"\n", args...)
	return code
}

// errText is the C library's wording of an errno (what dd would print),
// so the worker classifies both writers' errors alike.
func errText(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		switch en {
		case syscall.ENOSPC:
			return "No space left on device"
		case syscall.EFBIG:
			return "File too large"
		case syscall.EIO:
			return "Input/output error"
		case syscall.EROFS:
			return "Read-only file system"
		case syscall.EACCES:
			return "Permission denied"
		case syscall.ENOENT:
			return "No such file or directory"
		}
		s := en.Error()
		return strings.ToUpper(s[:1]) + s[1:]
	}
	return err.Error()
}

// disk is a device opened twice: through the page cache, and with
// O_DIRECT when asked (and possible) for aligned blocks.
type disk struct {
	f, direct *os.File
}

func openDisk(path string, flag int, mode string) (*disk, error) {
	d := &disk{}
	var err error
	if d.f, err = os.OpenFile(path, flag, 0); err != nil {
		return nil, err
	}
	switch mode {
	case "direct":
		if d.direct, err = os.OpenFile(path, flag|syscall.O_DIRECT, 0); err != nil {
			d.f.Close()
			return nil, err
		}
	case "buffered":
	default:
		d.f.Close()
		return nil, fmt.Errorf("mode %q: want direct or buffered", mode)
	}
	return d, nil
}

// file is the handle for a block of n bytes at off.
func (d *disk) file(off int64, n int) *os.File {
	if d.direct != nil && off%align == 0 && n%align == 0 {
		return d.direct
	}
	return d.f
}

func (d *disk) sync() error {
	return syscall.Fdatasync(int(d.f.Fd()))
}

// alignedBuf returns page-aligned memory, as O_DIRECT needs.
func alignedBuf(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		panic(err)
	}
	return b
}

func parseOffsets(args ...string) ([]int64, error) {
	v := make([]int64, len(args))
	for i, a := range args {
		n, err := strconv.ParseInt(a, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a byte count", a)
		}
		v[i] = n
	}
	return v, nil
}

// ahead is how many buffers of stdin the writer holds beyond the one
// being written: while a block goes to the device and a segment is
// flushed, stdin is still drained, so sshd, the network and the worker
// do not stall behind the disk.
const ahead = 3

// block is a run of bytes for the disk at off; err says why the input
// ended before it was full.
type block struct {
	buf []byte
	off int64
	err error
}

// readAhead reads [pos, size) of the image from r into blocks that never
// cross a segment end (start + k*seg), taking buffers from free. It stops
// at size exactly, and at the first read error, which its last block
// carries.
func readAhead(r io.Reader, pos, start, size, seg int64, free <-chan []byte, out chan<- block) {
	defer close(out)
	for pos < size {
		end := min(segEnd(pos, start, seg), size)
		buf := <-free
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), end-pos)])
		out <- block{buf: buf[:n], off: pos, err: err}
		if err != nil {
			return
		}
		pos += int64(n)
	}
}

// segEnd is the end of the segment that holds pos.
func segEnd(pos, start, seg int64) int64 { return start + ((pos-start)/seg+1)*seg }

func write(path, startArg, sizeArg, segArg, mode string, pull bool) int {
	diskErr, prefix := 1, ""
	if pull {
		diskErr, prefix = 3, "committed "
	}
	n, err := parseOffsets(startArg, sizeArg, segArg)
	if err != nil {
		return fail(2, "write: %v", err)
	}
	start, size, seg := n[0], n[1], n[2]
	if seg == 0 || start > size {
		return fail(2, "write: want START <= SIZE and SEGMENT > 0")
	}
	d, err := openDisk(path, os.O_WRONLY, mode)
	if err != nil {
		return fail(diskErr, "write: open %s: %s", path, errText(err))
	}
	// A larger pipe from sshd means fewer wake-ups per MiB.
	_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, 0, syscall.F_SETPIPE_SZ, pipeSize)
	free := make(chan []byte, ahead+1)
	for range ahead + 1 {
		free <- alignedBuf(bufSize)
	}
	blocks := make(chan block, ahead)
	go readAhead(os.Stdin, start, start, size, seg, free, blocks)
	out := bufio.NewWriter(os.Stdout)
	pos := start
	for b := range blocks {
		if len(b.buf) > 0 {
			if _, err := d.file(b.off, len(b.buf)).WriteAt(b.buf, b.off); err != nil {
				return fail(diskErr, "write %s at %d: %s", path, b.off, errText(err))
			}
			pos += int64(len(b.buf))
		}
		free <- b.buf[:cap(b.buf)]
		if b.err != nil {
			if pull {
				fmt.Fprintf(out, "short %d\n", pos)
				out.Flush()
			}
			segStart := segEnd(pos, start, seg) - seg
			return fail(5, "short segment at %d: %d of %d bytes", segStart, pos-segStart, min(segStart+seg, size)-segStart)
		}
		if pos != size && pos != segEnd(b.off, start, seg) {
			continue
		}
		if err := d.sync(); err != nil {
			return fail(diskErr, "flush %s: %s", path, errText(err))
		}
		fmt.Fprintf(out, "%s%d\n", prefix, pos)
		if err := out.Flush(); err != nil {
			return fail(1, "report: %v", err)
		}
	}
	if pull {
		var one [1]byte
		if n, _ := os.Stdin.Read(one[:]); n > 0 {
			fmt.Fprintln(out, "long")
			out.Flush()
			return 6
		}
	}
	return 0
}

func verify(path, mode, algo string) int {
	var h hash.Hash
	switch algo {
	case "sha256":
		h = sha256.New()
	case "sha512":
		h = sha512.New()
	default:
		return fail(2, "verify: algorithm %q: want sha256 or sha512", algo)
	}
	d, err := openDisk(path, os.O_RDONLY, mode)
	if err != nil {
		return fail(3, "verify: open %s: %s", path, errText(err))
	}
	buf := alignedBuf(bufSize)
	var pos int64
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		end, err := strconv.ParseInt(strings.TrimSpace(sc.Text()), 10, 64)
		if err != nil || end < 0 {
			return fail(2, "verify: %q is not an offset", sc.Text())
		}
		for pos < end {
			n := int(min(int64(len(buf)), end-pos))
			if _, err := d.file(pos, n).ReadAt(buf[:n], pos); err != nil {
				if err == io.EOF {
					return fail(3, "read back %s at %d: the disk ends before %d", path, pos, end)
				}
				return fail(3, "read back %s at %d: %s", path, pos, errText(err))
			}
			h.Write(buf[:n])
			pos += int64(n)
		}
	}
	if err := sc.Err(); err != nil {
		return fail(3, "verify: read offsets: %v", err)
	}
	fmt.Printf("%s  -\n", hex.EncodeToString(h.Sum(nil)))
	return 0
}

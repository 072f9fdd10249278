package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"go.temporal.io/sdk/activity"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities/remote"
)

// helperBinary is the rackflow-diskhelper the worker uploads to hosts.
type helperBinary struct {
	data   []byte
	sum    string   // sha256, hex
	arches []string // the `uname -m` answers of hosts it runs on
	prefix string   // or a prefix of them (32-bit ARM: armv7l, armv6l...)
}

// unameArch maps an ELF machine to what `uname -m` prints on hosts that
// run it.
var unameArch = map[elf.Machine][]string{
	elf.EM_X86_64:  {"x86_64"},
	elf.EM_AARCH64: {"aarch64", "arm64"},
	elf.EM_386:     {"i386", "i486", "i586", "i686"},
	elf.EM_PPC64:   {"ppc64le", "ppc64"},
	elf.EM_S390:    {"s390x"},
	elf.EM_RISCV:   {"riscv64"},
}

// helpers caches loaded helpers by path; the binary is read once per
// worker process.
var helpers sync.Map // path -> *helperLoad

type helperLoad struct {
	once sync.Once
	hs   []*helperBinary
	err  error
}

// cachedHelpers loads the helper at path, or, when path is a directory,
// every rackflow-diskhelper* in it (one per architecture of the fleet).
func cachedHelpers(path string) ([]*helperBinary, error) {
	v, _ := helpers.LoadOrStore(path, &helperLoad{})
	l := v.(*helperLoad)
	l.once.Do(func() { l.hs, l.err = loadHelpers(path) })
	return l.hs, l.err
}

func loadHelpers(path string) ([]*helperBinary, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		h, err := loadHelper(path)
		if err != nil {
			return nil, err
		}
		return []*helperBinary{h}, nil
	}
	files, err := filepath.Glob(filepath.Join(path, "rackflow-diskhelper*"))
	if err != nil {
		return nil, err
	}
	var hs []*helperBinary
	for _, f := range files {
		h, err := loadHelper(f)
		if err != nil {
			return nil, err
		}
		hs = append(hs, h)
	}
	if len(hs) == 0 {
		return nil, fmt.Errorf("%s: no rackflow-diskhelper* in it", path)
	}
	return hs, nil
}

func loadHelper(path string) (*helperBinary, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: not an ELF executable: %w", path, err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return nil, fmt.Errorf("%s: ELF type %s, not an executable", path, f.Type)
	}
	sum := sha256.Sum256(data)
	h := &helperBinary{data: data, sum: hex.EncodeToString(sum[:]), arches: unameArch[f.Machine]}
	if f.Machine == elf.EM_ARM {
		h.prefix = "arm"
	}
	if len(h.arches) == 0 && h.prefix == "" {
		return nil, fmt.Errorf("%s: built for %s, which rackflow does not map to a host architecture", path, f.Machine)
	}
	return h, nil
}

func (h *helperBinary) runsOn(arch string) bool {
	return slices.Contains(h.arches, arch) || (h.prefix != "" && strings.HasPrefix(arch, h.prefix) && arch != "arm64")
}

// installHelperScript stores stdin as the helper in the first directory,
// among a few (the login's own cache first: a live system keeps it in
// memory), that is ours alone (mode 700, owned by us) and lets it run
// (not mounted noexec), checks its sha256 and that it runs, and prints
// path=... or, when no directory will do, none=<why>. Argument: the
// expected sha256.
const installHelperScript = `sum=$1 src= why="no private directory to put it in"
for d in "${HOME:-/nonexistent}/.cache/rackflow" /run/rackflow /var/tmp/rackflow "/tmp/rackflow-$(id -u)"; do
  mkdir -p "$d" 2>/dev/null && chmod 700 "$d" 2>/dev/null && [ -O "$d" ] || continue
  f="$d/rackflow-diskhelper-$(printf %s "$sum" | cut -c1-16)"
  if [ -z "$src" ]; then
    cat > "$f.$$" || { rm -f "$f.$$"; why="cannot write to $d"; continue; }
    src="$f.$$"
  elif [ "$src" != "$f.$$" ]; then
    cp "$src" "$f.$$" || { rm -f "$f.$$"; continue; }
  fi
  got=$(sha256sum < "$f.$$" | cut -c1-64)
  if [ "$got" != "$sum" ]; then rm -f "$f.$$"; echo "none=upload arrived with sha256 $got"; exit 0; fi
  chmod 700 "$f.$$" && mv -f "$f.$$" "$f" || continue
  [ "$src" = "$f.$$" ] && src=$f
  if "$f" version >/dev/null 2>&1; then
    [ "$src" != "$f" ] && rm -f "$src"
    echo "path=$f"; exit 0
  fi
  why="$d does not let it run (noexec?)"
done
[ -n "$src" ] && rm -f "$src"
echo "none=$why"
`

// installHelper uploads the disk helper to the host when it can run
// there, and records its path in info. Any failure only means the dd
// pipeline is used, so it is logged, not returned.
func (a *Activities) installHelper(ctx context.Context, c *ssh.Client, host string, info *diskInfo) {
	if a.DiskHelper == "" {
		return
	}
	log := activity.GetLogger(ctx)
	hs, err := cachedHelpers(a.DiskHelper)
	if err != nil {
		log.Warn("disk helper unusable: writing with dd", "host", host, "error", err)
		return
	}
	var helper *helperBinary
	var have []string
	for _, h := range hs {
		if h.runsOn(info.arch) {
			helper = h
			break
		}
		have = append(have, h.arches...)
	}
	if helper == nil {
		log.Info("no disk helper built for this host: writing with dd", "host", host, "host_arch", info.arch, "helper_arches", have)
		return
	}
	cmd := "LC_ALL=C sh -c " + remote.Quote(installHelperScript) + " sh " + helper.sum
	out, err := remote.Output(ctx, c, cmd, bytes.NewReader(helper.data))
	if err != nil {
		log.Warn("could not upload the disk helper: writing with dd", "host", host, "error", err)
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, _ := strings.Cut(line, "="); k == "path" && strings.HasPrefix(v, "/") {
			info.helper = v
			log.Debug("disk helper installed", "host", host, "path", v)
			return
		} else if k == "none" {
			log.Warn("disk helper cannot run on the host: writing with dd", "host", host, "reason", v)
			return
		}
	}
	log.Warn("disk helper upload: unexpected answer: writing with dd", "host", host, "output", remote.TailLines(out, remote.StderrTailLines))
}

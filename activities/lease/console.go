package lease

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rackflow/rackflow/api"
)

// consoleTailBytes is how much of a console log's end is read: enough for
// MaxConsoleLines long lines, little enough for a log that grew for weeks.
const consoleTailBytes = 64 << 10

// The one-time host key URL is on the live system's kernel command line,
// which the kernel prints on the console; it must not reach the run's
// history, where every workflow reader would see it.
var consoleSecretRE = regexp.MustCompile(`(/v1/hostkeys/)[^\s"'&]+`)

// escapeRE matches terminal escape sequences (ECMA-48): CSI (ESC [ ...
// final), OSC (ESC ] ... BEL or ESC \), character set designations (ESC (
// B) and the two-character ones (ESC c, SeaBIOS's first words).
var escapeRE = regexp.MustCompile("\x1b(\\[[0-?]*[ -/]*[@-~]|\\][^\x07\x1b]*(\x07|\x1b\\\\)?|[ -/]+[0-~]|[0-~])")

// readConsole returns the last lines of dir/<host>.log, cleaned for an
// operator's eyes and the run's history, and when the log was last
// written. A missing log is no error: the host has no console logger.
func readConsole(dir, host string) ([]string, time.Time, error) {
	if !api.ValidName(host) {
		return nil, time.Time{}, fmt.Errorf("console log: host name %q is not a valid name", host)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("console log: %w", err)
	}
	defer root.Close()
	// O_NONBLOCK: opening a FIFO put there must not hang the activity; it
	// is refused below as not a regular file.
	f, err := root.OpenFile(host+".log", os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("console log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("console log: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, time.Time{}, fmt.Errorf("console log %s: not a regular file (%s)", st.Name(), st.Mode().Type())
	}
	from := max(st.Size()-consoleTailBytes, 0)
	buf := make([]byte, st.Size()-from)
	n, err := f.ReadAt(buf, from)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, time.Time{}, fmt.Errorf("console log: %w", err)
	}
	buf = buf[:n]
	if from > 0 {
		// The first line was cut: drop it.
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	return consoleLines(buf, api.MaxConsoleLines), st.ModTime(), nil
}

// consoleLines turns a serial console's bytes into at most max printable
// lines, the last ones: a carriage return starts the line over (what a
// terminal shows is what follows it), escape sequences and other control
// characters go, secrets are redacted, long lines are cut.
func consoleLines(b []byte, max int) []string {
	var out []string
	for _, raw := range strings.Split(string(b), "\n") {
		raw = escapeRE.ReplaceAllString(raw, "")
		raw = strings.TrimRight(raw, "\r")
		if i := strings.LastIndexByte(raw, '\r'); i >= 0 {
			raw = raw[i+1:]
		}
		raw = strings.ToValidUTF8(raw, "?")
		line := strings.Map(func(r rune) rune {
			switch {
			case r == '\t':
				return ' '
			case unicode.IsControl(r) || !unicode.IsPrint(r) && r != ' ':
				return -1
			}
			return r
		}, raw)
		line = strings.TrimSpace(consoleSecretRE.ReplaceAllString(line, "${1}[redacted]"))
		if line == "" {
			continue
		}
		out = append(out, truncate(line, api.MaxConsoleLineBytes))
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

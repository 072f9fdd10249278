package api

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func writeTemp(t *testing.T, name, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Every way a file can be wrong comes back as SpecErrors naming the file
// and, where there is one, the line.
func TestDecodeFileErrors(t *testing.T) {
	const netscaler = "netscaler: {url: \"http://ns\", credential: netscaler/lab}\n"
	tests := map[string]struct {
		yaml string
		want []string // "line: field: message prefix"
	}{
		"unknown field": {
			yaml: "name: web\nvipp: 203.0.113.50\n",
			want: []string{"2: : field vipp not found in type api.PublishInput"},
		},
		"wrong type": {
			yaml: "name: web\nvip: 203.0.113.50\nport: eighty\n",
			want: []string{"3: : cannot unmarshal !!str `eighty` into int"},
		},
		"syntax": {
			yaml: "name: web\n  vip: 203.0.113.50\n",
			want: []string{"2: : mapping values are not allowed in this context"},
		},
		"empty": {
			yaml: "# nothing yet\n",
			want: []string{"0: : holds no YAML document"},
		},
		"two documents": {
			yaml: "name: web\n---\nname: db\n",
			want: []string{"2: : a second YAML document; a file holds one"},
		},
		"invalid values, all at once": {
			yaml: "name: web\nvip: 203.0.113.50\nport: 0\nprotocol: TCP\nbackends:\n  - {ip: 10.0.0.300, port: 80}\n" + netscaler,
			want: []string{"3: port: must be 1-65535", "6: backends[0].ip: not an IPv4 address"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := writeTemp(t, "vip.yaml", tc.yaml)
			var in PublishInput
			err := DecodeFile(p, &in)
			se, ok := err.(SpecErrors)
			if !ok {
				t.Fatalf("DecodeFile = %v (%T), want SpecErrors", err, err)
			}
			var got []string
			for i, e := range se {
				if e.File != p {
					t.Errorf("error %d names file %q, want %q", i, e.File, p)
				}
				line := strings.Join([]string{strconv.Itoa(e.Line), e.Field, e.Msg}, ": ")
				if i < len(tc.want) && strings.HasPrefix(line, tc.want[i]) {
					line = tc.want[i]
				}
				got = append(got, line)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("errors (-want +got):\n%s\nfull: %v", d, err)
			}
			if e := se[0]; e.Line > 0 && !strings.HasPrefix(err.Error(), p+":"+strconv.Itoa(e.Line)+": ") {
				t.Errorf("message %q does not start with file:line", err)
			}
		})
	}
}

func TestDecodeFileReadsJSONAndAppliesDefaults(t *testing.T) {
	p := writeTemp(t, "inventory.json", `{"hosts": [{"name": "node07", "bmc": {"address": "127.0.0.1", "provider": "ipmi", "credential": "bmc/node07"},
	  "mac": "52:54:00:AB:CD:07", "network": {"ip": "192.0.2.17", "netmask": "255.255.255.0"}, "disk": "/dev/sda",
	  "image": {"url": "http://images.example/a.raw", "size": 1024, "sha256": "2b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfe"},
	  "ssh": {"credential": "ssh/provision"}}]}`)
	var inv Inventory
	if err := DecodeFile(p, &inv); err != nil {
		t.Fatal(err)
	}
	if h := inv.Hosts[0]; h.MAC != "52:54:00:ab:cd:07" || h.BMC.Port != 623 || h.SSH.User != "root" {
		t.Errorf("host %+v: want the MAC normalised and the defaults filled in", h)
	}
}

func TestDecodeFileMissing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope.yaml")
	var inv Inventory
	if err := DecodeFile(p, &inv); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("DecodeFile of a missing file = %v, want an error naming it", err)
	}
}

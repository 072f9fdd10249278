package lease

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/api"
)

func TestValidateNamesEveryBadField(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	good := Lease{MAC: "52:54:00:12:34:56", IP: "10.0.0.7", Netmask: "255.255.255.0", Gateway: "10.0.0.1", Profile: ProfileLive}
	tests := map[string]struct {
		edit   func(l *Lease)
		fields []string
	}{
		"good":              {edit: func(l *Lease) {}},
		"nothing":           {edit: func(l *Lease) { *l = Lease{} }, fields: []string{"mac", "ip", "netmask", "profile"}},
		"multicast mac":     {edit: func(l *Lease) { l.MAC = "01:00:5e:00:00:01" }, fields: []string{"mac"}},
		"gateway elsewhere": {edit: func(l *Lease) { l.Gateway = "10.9.0.1" }, fields: []string{"gateway"}},
		"holey netmask":     {edit: func(l *Lease) { l.Netmask = "255.0.255.0" }, fields: []string{"netmask"}},
		"past expiry":       {edit: func(l *Lease) { l.ExpiresAt = now.Add(-time.Second) }, fields: []string{"expires_at"}},
		"boot id":           {edit: func(l *Lease) { l.BootID = "a b" }, fields: []string{"boot_id"}},
		"second dns":        {edit: func(l *Lease) { l.DNS = []string{"10.0.0.53", "dns"} }, fields: []string{"dns[1]"}},
		"key":               {edit: func(l *Lease) { l.SSHAuthorizedKeys = []string{"ssh-ed25519"} }, fields: []string{"ssh_authorized_keys[0]"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			l := good
			tc.edit(&l)
			err := l.Validate(now)
			var got []string
			var fe api.FieldErrors
			if errors.As(err, &fe) {
				for _, e := range fe {
					got = append(got, e.Field)
				}
			} else if err != nil {
				t.Fatalf("Validate = %v, want api.FieldErrors", err)
			}
			if d := cmp.Diff(tc.fields, got); d != "" {
				t.Errorf("bad fields (-want +got):\n%s", d)
			}
		})
	}
}

func TestNormalized(t *testing.T) {
	in := Lease{MAC: "52-54-00-AA-BB-CC", IP: "10.0.0.7", Netmask: "255.255.255.0", DNS: []string{},
		SSHAuthorizedKeys: []string{"  ssh-ed25519 AAAA k \n"}, HostKey: "output only", UpdatedAt: time.Now(),
		ExpiresAt: time.Date(2030, 1, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600))}
	want := Lease{MAC: "52:54:00:aa:bb:cc", IP: "10.0.0.7", Netmask: "255.255.255.0",
		SSHAuthorizedKeys: []string{"ssh-ed25519 AAAA k"}, ExpiresAt: time.Date(2030, 1, 1, 11, 0, 0, 0, time.UTC)}
	if d := cmp.Diff(want, in.Normalized()); d != "" {
		t.Errorf("Normalized (-want +got):\n%s", d)
	}
	if !want.Expired(want.ExpiresAt) || want.Expired(want.ExpiresAt.Add(-time.Nanosecond)) || (Lease{}).Expired(time.Now()) {
		t.Error("Expired: want true from ExpiresAt on, false before it and for a lease without one")
	}
}

package nitro

import (
	"strings"
)

// MarkerPrefix starts the ownership marker rackflow writes into the comment
// of every servicegroup and lbvserver it creates.
const MarkerPrefix = "rackflow:"

// Marker is the comment that marks an object as created by owner, the
// workflow ID (e.g. "publish/203.0.113.10:443").
func Marker(owner string) string { return MarkerPrefix + owner }

// NamePrefix is the name prefix that marks objects without a comment field
// (inat, rnat) as owner's: "rf_" + owner with every character NetScaler
// does not allow in names replaced by "_", then "_". EnsureINAT, EnsureRNAT
// and their Delete counterparts refuse names without it.
func NamePrefix(owner string) string {
	var b strings.Builder
	b.WriteString("rf_")
	for _, r := range owner {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_#.:@=-", r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	b.WriteByte('_')
	return b.String()
}

// OwnedName is NamePrefix(owner)+role: a name that carries its owner.
func OwnedName(owner, role string) string { return NamePrefix(owner) + role }

// ObjectNames are the names one publication uses on a NetScaler.
type ObjectNames struct {
	ServiceGroup string `json:"service_group"`
	VServer      string `json:"vserver"`
	INAT         string `json:"inat"`
	RNAT         string `json:"rnat"`
}

// Names derives every object name of owner's publication, so that a
// re-run, an unpublish and an operator find the same objects. It is
// deterministic and may be called from workflow code.
func Names(owner string) ObjectNames {
	return ObjectNames{
		ServiceGroup: OwnedName(owner, "sg"),
		VServer:      OwnedName(owner, "vs"),
		INAT:         OwnedName(owner, "inat"),
		RNAT:         OwnedName(owner, "rnat"),
	}
}

package image_test

import (
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/testsuite/sshd"
)

// BenchmarkWriteImage256MiB pushes a 256 MiB image into a real sshd on
// loopback, default segment size, dd with fsync into a file, read-back
// included. Run: go test -run ^$ -bench WriteImage256MiB ./activities/image/
func BenchmarkWriteImage256MiB(b *testing.B) {
	f := newFixture(b, 256<<20, 257<<20)
	f.acts.SegmentSize = 0
	f.acts.HeartbeatEvery = 0
	srv := sshd.Start(b, sshd.Options{AuthorizedKeys: []ssh.PublicKey{f.key.Public()}})
	b.SetBytes(f.img.Size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := execute(b, f.acts, f.input(srv.Addr(), srv.HostKeyLine()), nil)
		if r.err != nil {
			b.Fatal(r.err)
		}
		b.ReportMetric(r.res.MBps, "stream-MB/s")
	}
}

// Package tlsfrontend is a stand-in Temporal frontend for tests of how
// rackflow's programs connect: a TLS gRPC server on loopback that records
// the server name, client certificate and API key of each call and answers
// Unavailable. It serves no Temporal API.
package tlsfrontend

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Frontend is a TLS gRPC server on loopback that answers every call with
// Unavailable and records who called: the TLS server name asked for, the
// client certificate's subject and the authorization header.
type Frontend struct {
	Addr, CA, ClientCert, ClientKey string
	seen                            chan Call
}

// Call is what Frontend saw of one call.
type Call struct {
	ServerName, ClientCN, Authorization string
}

// Start runs a Frontend whose certificate is for name, signed by a
// CA written to dir, with a client pair signed by the same CA.
func Start(t *testing.T, dir, name string) *Frontend {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(cn string, usage x509.ExtKeyUsage, dns []string) (certPEM, keyPEM []byte) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, _ := x509.MarshalECPrivateKey(k)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
	}
	f := &Frontend{seen: make(chan Call, 16), CA: filepath.Join(dir, "ca.pem"),
		ClientCert: filepath.Join(dir, "client.pem"), ClientKey: filepath.Join(dir, "client.key")}
	write := func(path string, b []byte) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(f.CA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	cc, ck := issue("rackflow-client", x509.ExtKeyUsageClientAuth, nil)
	write(f.ClientCert, cc)
	write(f.ClientKey, ck)
	sc, sk := issue(name, x509.ExtKeyUsageServerAuth, []string{name})
	pair, err := tls.X509KeyPair(sc, sk)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	tc := &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		var c Call
		if md, ok := metadata.FromIncomingContext(stream.Context()); ok && len(md.Get("authorization")) > 0 {
			c.Authorization = md.Get("authorization")[0]
		}
		if p, ok := peer.FromContext(stream.Context()); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
				c.ServerName = ti.State.ServerName
				if len(ti.State.PeerCertificates) > 0 {
					c.ClientCN = ti.State.PeerCertificates[0].Subject.CommonName
				}
			}
		}
		select {
		case f.seen <- c:
		default:
		}
		return status.Error(codes.Unavailable, "test frontend")
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	f.Addr = ln.Addr().String()
	return f
}

// Next returns the next call the frontend saw.
func (f *Frontend) Next(t *testing.T) Call {
	t.Helper()
	select {
	case c := <-f.seen:
		return c
	case <-time.After(20 * time.Second):
		t.Fatal("the frontend saw no call")
		return Call{}
	}
}

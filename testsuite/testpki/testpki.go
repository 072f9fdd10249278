// Package testpki makes, for tests, a CA and the server and client
// certificates it signs, written as PEM files. It is for tests only: the
// keys are fresh per call and live an hour.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// PKI names the PEM files New wrote.
type PKI struct {
	// CA is the CA certificate, a bundle a client trusts.
	CA string
	// Cert and Key are the server's certificate (for 127.0.0.1, ::1 and
	// localhost) and its private key, mode 0600.
	Cert, Key string
}

// New writes a CA and a server certificate it signs for loopback into dir.
func New(t testing.TB, dir string) PKI {
	t.Helper()
	ca := NewCA(t, dir)
	cert, key := ca.Issue(t, "server", "rackflow-pxe", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, x509.ExtKeyUsageServerAuth)
	return PKI{CA: ca.File, Cert: cert, Key: key}
}

// CA is a test certificate authority whose certificate is in File.
type CA struct {
	File string
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial atomic.Int64

// NewCA makes a CA and writes its certificate to dir/ca.pem.
func NewCA(t testing.TB, dir string) *CA {
	t.Helper()
	ca := &CA{File: filepath.Join(dir, "ca.pem"), dir: dir}
	ca.cert, ca.key = issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "rackflow test CA"},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, nil)
	write(t, ca.File, &pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
	return ca
}

// Issue signs a certificate for cn (with the given names and addresses,
// for usage: server or client auth) and writes dir/<file>.pem and
// dir/<file>.key; it returns their paths.
func (ca *CA) Issue(t testing.TB, file, cn string, dns []string, ips []net.IP, usage x509.ExtKeyUsage) (cert, key string) {
	t.Helper()
	c, k := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, DNSNames: dns, IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature}, ca.cert, ca.key)
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(ca.dir, file+".pem"), filepath.Join(ca.dir, file+".key")
	write(t, cert, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	write(t, key, &pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	return cert, key
}

// issue makes a key and a certificate from tmpl, signed by parent's key
// (self-signed when parent is nil).
func issue(t testing.TB, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl.SerialNumber = big.NewInt(serial.Add(1))
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func write(t testing.TB, path string, b *pem.Block) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Pool is a certificate pool holding the CA, for a server that checks
// client certificates.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Package tlsfrontend is a stand-in Temporal frontend for tests of how
// rackflow's programs connect: a TLS gRPC server on loopback that records
// the server name, client certificate and API key of each call and answers
// Unavailable. It serves no Temporal API.
package tlsfrontend

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/rackflow/rackflow/testsuite/testpki"
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
	ca := testpki.NewCA(t, dir)
	f := &Frontend{seen: make(chan Call, 16), CA: ca.File}
	f.ClientCert, f.ClientKey = ca.Issue(t, "client", "rackflow-client", nil, nil, x509.ExtKeyUsageClientAuth)
	sc, sk := ca.Issue(t, "server", name, []string{name}, nil, x509.ExtKeyUsageServerAuth)
	pair, err := tls.LoadX509KeyPair(sc, sk)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: ca.Pool(), ClientAuth: tls.VerifyClientCertIfGiven}
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

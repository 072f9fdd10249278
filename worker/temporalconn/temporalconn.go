// Package temporalconn is how rackflow's programs (the worker and the
// starter) connect to a Temporal frontend: plain gRPC to a local dev server,
// or TLS with an optional client certificate (mTLS), CA bundle, server name
// and API key for a production cluster or Temporal Cloud. Both programs take
// the same flags and environment variables, registered here once.
//
// It is not a client wrapper: it only builds client.Options.
package temporalconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"go.temporal.io/sdk/client"
)

// Settings say where the frontend is and how to authenticate to it.
type Settings struct {
	// Address is the frontend's host:port.
	Address string
	// Namespace is the Temporal namespace.
	Namespace string
	// TLSCert and TLSKey are the client pair for mTLS (both or neither).
	TLSCert, TLSKey string
	// TLSCA is a CA bundle for the frontend's certificate (default: the
	// system roots).
	TLSCA string
	// TLSServerName is the frontend certificate's expected name (default:
	// from Address).
	TLSServerName string
	// APIKey is sent as a bearer token on every call; read from APIKeyFile
	// or TEMPORAL_API_KEY by Load, never given on the command line.
	APIKey, APIKeyFile string
}

// Env returns the environment variable name's value, or def.
type Env func(name, def string) string

// RegisterFlags adds --address, --namespace, --tls-cert, --tls-key,
// --tls-ca, --tls-server-name and --api-key-file to fs, with defaults from
// the environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TLS_CERT,
// TEMPORAL_TLS_KEY, TEMPORAL_TLS_CA, TEMPORAL_TLS_SERVER_NAME,
// TEMPORAL_API_KEY_FILE), as the temporal CLI names them.
func (s *Settings) RegisterFlags(fs *flag.FlagSet, env Env) {
	fs.StringVar(&s.Address, "address", env("TEMPORAL_ADDRESS", "127.0.0.1:7233"), "Temporal frontend host:port (TEMPORAL_ADDRESS)")
	fs.StringVar(&s.Namespace, "namespace", env("TEMPORAL_NAMESPACE", "default"), "Temporal namespace (TEMPORAL_NAMESPACE)")
	fs.StringVar(&s.TLSCert, "tls-cert", env("TEMPORAL_TLS_CERT", ""), "client certificate for mTLS (TEMPORAL_TLS_CERT)")
	fs.StringVar(&s.TLSKey, "tls-key", env("TEMPORAL_TLS_KEY", ""), "client key for mTLS (TEMPORAL_TLS_KEY)")
	fs.StringVar(&s.TLSCA, "tls-ca", env("TEMPORAL_TLS_CA", ""), "CA bundle that signs the frontend's certificate (TEMPORAL_TLS_CA)")
	fs.StringVar(&s.TLSServerName, "tls-server-name", env("TEMPORAL_TLS_SERVER_NAME", ""), "expected server name of the frontend (TEMPORAL_TLS_SERVER_NAME)")
	fs.StringVar(&s.APIKeyFile, "api-key-file", env("TEMPORAL_API_KEY_FILE", ""), "file holding a Temporal API key (or TEMPORAL_API_KEY)")
}

// Load reads the API key (TEMPORAL_API_KEY, or APIKeyFile when set) and
// checks the settings belong together.
func (s *Settings) Load(getenv func(string) string) error {
	s.APIKey = getenv("TEMPORAL_API_KEY")
	if s.APIKeyFile != "" {
		b, err := os.ReadFile(s.APIKeyFile)
		if err != nil {
			return fmt.Errorf("api key file: %w", err)
		}
		s.APIKey = strings.TrimSpace(string(b))
		if s.APIKey == "" {
			return fmt.Errorf("api key file %s is empty", s.APIKeyFile)
		}
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return errors.New("tls-cert and tls-key go together")
	}
	return nil
}

// Options returns the client options: TLS when any TLS setting or an API
// key is given (an API key is never sent in the clear), plain otherwise.
func (s Settings) Options() (client.Options, error) {
	o := client.Options{HostPort: s.Address, Namespace: s.Namespace}
	if s.TLSCert != "" || s.TLSCA != "" || s.APIKey != "" || s.TLSServerName != "" {
		tc := &tls.Config{ServerName: s.TLSServerName, MinVersion: tls.VersionTLS12}
		if s.TLSCert != "" {
			cert, err := tls.LoadX509KeyPair(s.TLSCert, s.TLSKey)
			if err != nil {
				return o, fmt.Errorf("load mTLS key pair: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		if s.TLSCA != "" {
			pem, err := os.ReadFile(s.TLSCA)
			if err != nil {
				return o, fmt.Errorf("read tls-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return o, fmt.Errorf("tls-ca %s holds no PEM certificate", s.TLSCA)
			}
			tc.RootCAs = pool
		}
		o.ConnectionOptions.TLS = tc
	}
	if s.APIKey != "" {
		o.Credentials = client.NewAPIKeyStaticCredentials(s.APIKey)
	}
	return o, nil
}

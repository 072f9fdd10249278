// Command hostkeyfp is the test live system's host key client: it fetches
// the one-time SSH host key from the URL given (rackflow.hostkey_url) and
// prints "sha256=<hex of the body> fingerprint=<SHA256 fingerprint of its
// public half>", so the test can compare it with the public key the PXE
// service gave the worker to pin, without the private key ever leaving the
// VM. It exits 1, naming the HTTP status, when the key is not served (busybox
// wget cannot be used: the static busybox's wget crashes in glibc's NSS).
//
//	hostkeyfp [-o KEYFILE] HOSTKEY-URL   also installs the key (mode 0600)
//	                                     for the live system's sshd
//	hostkeyfp -fetch URL FILE            saves URL's body (authorized_keys)
//	hostkeyfp -gen KEYFILE               makes a new ed25519 host key (the
//	                                     installed OS's first boot)
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"golang.org/x/crypto/ssh"
)

func main() {
	var err error
	switch a := os.Args[1:]; {
	case len(a) == 3 && a[0] == "-fetch":
		var body []byte
		if body, err = get(a[1]); err == nil {
			err = os.WriteFile(a[2], body, 0o644)
		}
	case len(a) == 2 && a[0] == "-gen":
		err = gen(a[1])
	case len(a) == 3 && a[0] == "-o":
		err = run(a[2], a[1])
	case len(a) == 1:
		err = run(a[0], "")
	default:
		fmt.Fprintln(os.Stderr, "usage: hostkeyfp [-o KEYFILE] HOSTKEY-URL | hostkeyfp -fetch URL FILE")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostkeyfp:", err)
		os.Exit(1)
	}
}

func gen(keyFile string) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return err
	}
	fmt.Printf("fingerprint=%s\n", ssh.FingerprintSHA256(signer.PublicKey()))
	return nil
}

func get(url string) ([]byte, error) {
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET: %s", resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 64<<10))
}

func run(url, keyFile string) error {
	keyPEM, err := get(url)
	if err != nil {
		return fmt.Errorf("host key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		// The parse error names no key material.
		return fmt.Errorf("not an OpenSSH private key: %w", err)
	}
	if keyFile != "" {
		if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
			return err
		}
	}
	fmt.Printf("sha256=%x fingerprint=%s\n", sha256.Sum256(keyPEM), ssh.FingerprintSHA256(signer.PublicKey()))
	return nil
}

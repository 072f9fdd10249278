// Command hostkeyfp is the test live system's host key client: it fetches
// the one-time SSH host key from the URL given (rackflow.hostkey_url) and
// prints "sha256=<hex of the body> fingerprint=<SHA256 fingerprint of its
// public half>", so the test can compare it with the public key the PXE
// service gave the worker to pin, without the private key ever leaving the
// VM. It exits 1, naming the HTTP status, when the key is not served (busybox
// wget cannot be used: the static busybox's wget crashes in glibc's NSS).
package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"golang.org/x/crypto/ssh"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: hostkeyfp HOSTKEY-URL")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "hostkeyfp:", err)
		os.Exit(1)
	}
}

func run(url string) error {
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET host key: %s", resp.Status)
	}
	pem, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("read host key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		// The parse error names no key material.
		return fmt.Errorf("not an OpenSSH private key: %w", err)
	}
	fmt.Printf("sha256=%x fingerprint=%s\n", sha256.Sum256(pem), ssh.FingerprintSHA256(signer.PublicKey()))
	return nil
}

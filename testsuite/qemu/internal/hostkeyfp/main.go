// Command hostkeyfp prints the SHA256 fingerprint (as ssh-keygen -l shows
// it) of the public half of an OpenSSH private key file. The test live
// system runs it on the host key it fetched, so the test can compare it
// with the public key the PXE service gave the worker to pin, without the
// private key ever leaving the VM.
package main

import (
	"fmt"
	"os"

	"golang.org/x/crypto/ssh"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: hostkeyfp PRIVATE-KEY-FILE")
		os.Exit(2)
	}
	pem, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostkeyfp:", err)
		os.Exit(1)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		// The parse error names no key material.
		fmt.Fprintln(os.Stderr, "hostkeyfp: not an OpenSSH private key:", err)
		os.Exit(1)
	}
	fmt.Println(ssh.FingerprintSHA256(signer.PublicKey()))
}

// Package keyring holds the user's key material and the cryptography done
// with it: the password key (a memory-hard KDF whose parameters are
// published on chain), the presentation, backup, primary and privileged
// access keys, the XOR wrapping of the paper's bootstrap process, AES-256-GCM
// sealing, the bootstrap, sign-on and recovery flows, and identity operations
// (sign, ECDH, encrypt). The secret server that safeguards presentation key
// slices lives in the sub-package keyring/secretserver.
//
// keyring never imports chainfs: where it needs the chain (publishing the
// bootstrap messages, reading them back at sign-on) it defines the small
// interface it uses and the agent wires chainfs's backend into it, so the
// imports point one way (chainfs → keyring).
//
// Secrets are held in fixed-size arrays (Key) so that they can be wiped when
// no longer needed. Wiping is best effort in Go: the garbage collector and
// the compiler may have copied a value elsewhere (stack growth, escaped
// temporaries, strings converted from byte slices), so wiping shortens the
// life of a secret in memory but does not guarantee it is gone.
package keyring

// Package vm is the System's virtual machine: a wazero runtime that boots a
// WebAssembly (wasip1) module — the bootloader installed at "/", or any OS
// image — with the user's tree as the guest's disk at "/", the caller's
// stdin/stdout/stderr as its console, and four virtual "hardware" host
// modules (blockchain, filesystem, identity, network; docs/VM-ABI.md).
//
// The package knows nothing of chainfs, keyring or the chain backend: it
// defines the small interfaces it needs of them (Tree, Blockchain, Sharing,
// Identity, Unlocker, Network) and vm/hostdev adapts the agent's real parts.
// Key material never enters this package's guest-facing code: the guest
// asks for operations (sign, encrypt, ECDH) and receives only results.
//
// Every host function validates each pointer and length against the guest's
// memory and its own input limits before it reads or allocates, recovers
// from any fault, and answers with an error code (Code); a guest can stop
// itself, never the host. Limits — a memory page cap and a wall-clock
// deadline through context cancellation — bound what a runaway guest costs.
package vm

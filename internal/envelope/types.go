package envelope

import "fmt"

// The message type registry. Ranges group types by the address that
// publishes them; docs/PROTOCOL.md describes each type's fields. A value is
// never reused for a different meaning: retired types stay reserved.
const (
	// 0x01–0x1f: bootstrap messages, published from the presentation
	// key's address (keyring).
	TypeBootSalt         Type = 0x01 // KDF id, KDF parameters, salt (paper step 7)
	TypeBootWrapPwPres   Type = 0x02 // primary key under XOR(password key, presentation key) (step 8)
	TypeBootWrapPwBackup Type = 0x03 // primary key under XOR(password key, backup key) (step 9)
	TypeBootWrapPresBkp  Type = 0x04 // primary key under XOR(presentation key, backup key) (step 10)
	TypeBootPrivPwPrim   Type = 0x05 // privileged key under XOR(password key, primary key) (step 11)
	TypeBootPrivPresBkp  Type = 0x06 // privileged key under XOR(presentation key, backup key) (step 12)
	TypeBootPubKeys      Type = 0x07 // primary and privileged public keys, plain (step 13)
	TypeBootPrimaryPair  Type = 0x08 // primary key pair's private key under the primary key (step 14)
	TypeBootPrivPair     Type = 0x09 // privileged key pair's private key under the privileged key (step 15)
	TypeBootFSRoots      Type = 0x0a // filesystem read and write tree roots under the primary key (step 16)
	TypeBootRetire       Type = 0x0b // this presentation address is superseded (recovery)

	// 0x20–0x3f: filesystem node commits, published from a node's write
	// address (chainfs).
	TypeNodeCommit Type = 0x20 // encrypted list of operations on one node
	TypeBootloader Type = 0x21 // WebAssembly bootloader at the "/" node (vm)

	// 0x40–0x4f: sharing and publishing.
	TypeShare   Type = 0x40 // keys for a node, encrypted to a recipient
	TypePublish Type = 0x41 // keys for a node, in the clear

	// 0x50–0x5f: mountable images.
	TypeImage Type = 0x50

	// 0x60–0x6f: the Domain System (netdev).
	TypeDomain Type = 0x60
)

var typeNames = map[Type]string{
	TypeBootSalt:         "boot-salt",
	TypeBootWrapPwPres:   "boot-wrap-pw-pres",
	TypeBootWrapPwBackup: "boot-wrap-pw-backup",
	TypeBootWrapPresBkp:  "boot-wrap-pres-backup",
	TypeBootPrivPwPrim:   "boot-priv-pw-primary",
	TypeBootPrivPresBkp:  "boot-priv-pres-backup",
	TypeBootPubKeys:      "boot-pubkeys",
	TypeBootPrimaryPair:  "boot-primary-pair",
	TypeBootPrivPair:     "boot-priv-pair",
	TypeBootFSRoots:      "boot-fs-roots",
	TypeBootRetire:       "boot-retire",
	TypeNodeCommit:       "node-commit",
	TypeBootloader:       "bootloader",
	TypeShare:            "share",
	TypePublish:          "publish",
	TypeImage:            "image",
	TypeDomain:           "domain",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type-0x%02x", byte(t))
}

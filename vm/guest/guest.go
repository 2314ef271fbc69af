//go:build wasip1

package guest

import (
	"encoding/binary"
	"encoding/json"
	"io"
	"net/netip"
	"runtime"
	"strings"
	"unsafe"
)

// ptr is the linear-memory address of b's first byte (0 for an empty
// slice). wasm32 addresses fit in 32 bits.
func ptr(b []byte) uint32 {
	if len(b) == 0 {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(&b[0])))
}

func sptr(s string) uint32 {
	if s == "" {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(unsafe.StringData(s))))
}

func u32ptr(v *uint32) uint32 { return uint32(uintptr(unsafe.Pointer(v))) }

func err(c uint32) error {
	if c == 0 {
		return nil
	}
	return Code(c)
}

// call runs f with an output buffer, growing it once if the host says it
// is too small.
func call(size int, f func(out, outCap, outLen uint32) uint32) ([]byte, error) {
	buf := make([]byte, size)
	for range 2 {
		var n uint32
		c := f(ptr(buf), uint32(len(buf)), u32ptr(&n))
		runtime.KeepAlive(buf)
		switch Code(c) {
		case OK:
			return buf[:n], nil
		case ErrShortBuffer:
			buf = make([]byte, n)
			continue
		}
		return nil, Code(c)
	}
	return nil, ErrShortBuffer
}

// TxRef is one transaction of an address.
type TxRef struct {
	TxID   [32]byte // display byte order
	Height int32    // -1 while unconfirmed
}

// AddressTxs lists an address's transactions.
func AddressTxs(addr string) ([]TxRef, error) {
	b, e := call(36*16, func(o, c, l uint32) uint32 { return RawAddressTxs(sptr(addr), uint32(len(addr)), o, c, l) })
	runtime.KeepAlive(addr)
	if e != nil {
		return nil, e
	}
	out := make([]TxRef, 0, len(b)/36)
	for i := 0; i+36 <= len(b); i += 36 {
		var t TxRef
		copy(t.TxID[:], b[i:i+32])
		t.Height = int32(binary.LittleEndian.Uint32(b[i+32:]))
		out = append(out, t)
	}
	return out, nil
}

// Balance returns an address's confirmed and unconfirmed satoshis.
func Balance(addr string) (confirmed, unconfirmed int64, e error) {
	var b [16]byte
	c := RawBalance(sptr(addr), uint32(len(addr)), ptr(b[:]))
	runtime.KeepAlive(addr)
	if c != 0 {
		return 0, 0, Code(c)
	}
	return int64(binary.LittleEndian.Uint64(b[:8])), int64(binary.LittleEndian.Uint64(b[8:])), nil
}

// TxAddresses lists the addresses a transaction pays or spends from.
func TxAddresses(txid [32]byte) ([]string, error) {
	b, e := call(512, func(o, c, l uint32) uint32 { return RawTxAddresses(ptr(txid[:]), o, c, l) })
	if e != nil || len(b) == 0 {
		return nil, e
	}
	return strings.Split(string(b), "\n"), nil
}

// GetTx returns a transaction in wire encoding.
func GetTx(txid [32]byte) ([]byte, error) {
	return call(1024, func(o, c, l uint32) uint32 { return RawGetTx(ptr(txid[:]), o, c, l) })
}

// Broadcast submits a transaction in wire encoding.
func Broadcast(raw []byte) ([32]byte, error) {
	var id [32]byte
	c := RawBroadcast(ptr(raw), uint32(len(raw)), ptr(id[:]))
	runtime.KeepAlive(raw)
	return id, err(c)
}

// TipHeight is the best block's height.
func TipHeight() (int32, error) {
	var h uint32
	c := RawTipHeight(u32ptr(&h))
	return int32(h), err(c)
}

func flag(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// Publish makes a folder public (readable; writable too if write).
func Publish(path string, write bool) error {
	c := RawPublish(sptr(path), uint32(len(path)), flag(write))
	runtime.KeepAlive(path)
	return err(c)
}

// Share grants a user (public key in hex, or contact name) read access to
// a folder, and write access if write.
func Share(path, to string, write bool) error {
	c := RawShare(sptr(path), uint32(len(path)), sptr(to), uint32(len(to)), flag(write))
	runtime.KeepAlive(path)
	runtime.KeepAlive(to)
	return err(c)
}

// CreateImage packs a folder into a mountable image and returns its
// reference.
func CreateImage(path string, public bool) (string, error) {
	b, e := call(256, func(o, c, l uint32) uint32 {
		return RawImageCreate(sptr(path), uint32(len(path)), flag(public), o, c, l)
	})
	runtime.KeepAlive(path)
	return string(b), e
}

// MountImage mounts an image at path.
func MountImage(ref, path string) error {
	c := RawImageMount(sptr(ref), uint32(len(ref)), sptr(path), uint32(len(path)))
	runtime.KeepAlive(ref)
	runtime.KeepAlive(path)
	return err(c)
}

// UnmountImage unmounts the image at path.
func UnmountImage(path string) error {
	c := RawImageUnmount(sptr(path), uint32(len(path)))
	runtime.KeepAlive(path)
	return err(c)
}

// Identity is what any program may know about the user.
type Identity struct {
	User             string `json:"user"`
	PrimaryPubKey    string `json:"primary_pub"`
	PrivilegedPubKey string `json:"privileged_pub"`
	RootAddress      string `json:"root_address"`
	Network          string `json:"network"`
}

// Info describes the user.
func Info() (Identity, error) {
	var id Identity
	b, e := call(512, RawInfo)
	if e != nil {
		return id, e
	}
	if e := json.Unmarshal(b, &id); e != nil {
		return id, e
	}
	return id, nil
}

// PublicKey returns a key pair's compressed public key.
func PublicKey(which uint32) ([]byte, error) {
	return call(33, func(o, c, l uint32) uint32 { return RawPublicKey(which, o, c, l) })
}

// Encrypt seals data under the user's primary key (for this VM's
// programs only).
func Encrypt(data []byte) ([]byte, error) {
	b, e := call(len(data)+64, func(o, c, l uint32) uint32 { return RawEncrypt(ptr(data), uint32(len(data)), o, c, l) })
	runtime.KeepAlive(data)
	return b, e
}

// Decrypt opens what Encrypt sealed.
func Decrypt(data []byte) ([]byte, error) {
	b, e := call(len(data), func(o, c, l uint32) uint32 { return RawDecrypt(ptr(data), uint32(len(data)), o, c, l) })
	runtime.KeepAlive(data)
	return b, e
}

// Sign signs msg with a key pair (DER ECDSA over the ABI's message
// digest). PrivilegedPair asks the user to unlock if needed.
func Sign(which uint32, msg []byte) ([]byte, error) {
	b, e := call(72, func(o, c, l uint32) uint32 { return RawSign(which, ptr(msg), uint32(len(msg)), o, c, l) })
	runtime.KeepAlive(msg)
	return b, e
}

// Verify checks a signature made by Sign (of any user).
func Verify(pub, msg, sig []byte) error {
	c := RawVerify(ptr(pub), uint32(len(pub)), ptr(msg), uint32(len(msg)), ptr(sig), uint32(len(sig)))
	runtime.KeepAlive(pub)
	runtime.KeepAlive(msg)
	runtime.KeepAlive(sig)
	return err(c)
}

// ECDH returns a secret shared between the user's privileged key pair and
// pub.
func ECDH(pub []byte) ([]byte, error) {
	b, e := call(32, func(o, c, l uint32) uint32 { return RawECDH(ptr(pub), uint32(len(pub)), o, c, l) })
	runtime.KeepAlive(pub)
	return b, e
}

// Resolve looks a name up: DNS first, then the Domain System.
func Resolve(name string) ([]netip.Addr, error) {
	b, e := call(17*8, func(o, c, l uint32) uint32 { return RawResolve(sptr(name), uint32(len(name)), o, c, l) })
	runtime.KeepAlive(name)
	if e != nil {
		return nil, e
	}
	var out []netip.Addr
	for i := 0; i+17 <= len(b); i += 17 {
		a := netip.AddrFrom16([16]byte(b[i+1 : i+17]))
		if b[i] == 4 {
			a = a.Unmap()
		}
		out = append(out, a)
	}
	return out, nil
}

// Conn is an outbound TCP connection through the host.
type Conn struct {
	h uint32
	// TimeoutMS bounds each Read and Write (0: the host's default).
	TimeoutMS uint32
}

// Dial connects to host:port.
func Dial(host string, port uint16, timeoutMS uint32) (*Conn, error) {
	var h uint32
	c := RawTCPConnect(sptr(host), uint32(len(host)), uint32(port), timeoutMS, u32ptr(&h))
	runtime.KeepAlive(host)
	if c != 0 {
		return nil, Code(c)
	}
	return &Conn{h: h, TimeoutMS: timeoutMS}, nil
}

// Read implements io.Reader.
func (c *Conn) Read(p []byte) (int, error) {
	var n uint32
	r := RawTCPRecv(c.h, ptr(p), uint32(len(p)), c.TimeoutMS, u32ptr(&n))
	runtime.KeepAlive(p)
	if Code(r) == ErrEOF {
		return int(n), io.EOF
	}
	return int(n), err(r)
}

// Write implements io.Writer.
func (c *Conn) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		var n uint32
		r := RawTCPSend(c.h, ptr(p[done:]), uint32(len(p)-done), c.TimeoutMS, u32ptr(&n))
		runtime.KeepAlive(p)
		done += int(n)
		if r != 0 {
			return done, Code(r)
		}
	}
	return done, nil
}

// Close implements io.Closer.
func (c *Conn) Close() error { return err(RawTCPClose(c.h)) }

//go:build wasip1

// Command hostile is a test guest that attacks the VM's host modules. Its
// first argument picks the attack:
//
//	keys    call every host function the way a program would and print
//	        everything it got back (hex), so the test can look for key
//	        material; argv[2:] are a file holding a ciphertext the System
//	        sealed under the primary key and that message's txid (hex)
//	badptr  call every host function with pointers outside memory, huge
//	        lengths, invalid paths and arguments; print "name code" lines
//	loop    spin forever
//	oom     allocate until memory runs out
package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"github.com/integrity-sys/integrity/vm/guest"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hostile keys|badptr|loop|oom")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "keys":
		keys(os.Args[2:])
	case "badptr":
		badptr()
	case "loop":
		x := 0
		for {
			x++
		}
	case "oom":
		var hold [][]byte
		for {
			b := make([]byte, 1<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = byte(i)
			}
			hold = append(hold, b)
		}
	}
}

var out = bufio.NewWriter(os.Stdout)

func dump(name string, b []byte, err error) {
	fmt.Fprintf(out, "%s %s err=%v\n", name, hex.EncodeToString(b), err)
}

// keys tries to get key material through every call.
func keys(args []string) {
	defer out.Flush()
	// Everything the environment gives.
	dump("env", []byte(strings.Join(os.Environ(), "\n")), nil)
	dump("args", []byte(strings.Join(os.Args, "\n")), nil)
	id, err := guest.Info()
	dump("info", []byte(fmt.Sprintf("%+v", id)), err)
	for _, w := range []uint32{guest.PrimaryPair, guest.PrivilegedPair, 2, 0xffffffff} {
		b, err := guest.PublicKey(w)
		dump(fmt.Sprint("public_key ", w), b, err)
	}
	msgs := [][]byte{nil, []byte("hello"), make([]byte, 32), make([]byte, 1<<16)}
	for i, m := range msgs {
		for _, w := range []uint32{guest.PrimaryPair, guest.PrivilegedPair} {
			sig, err := guest.Sign(w, m)
			dump(fmt.Sprint("sign ", w, " ", i), sig, err)
		}
		ct, err := guest.Encrypt(m)
		dump(fmt.Sprint("encrypt ", i), ct, err)
		pt, err := guest.Decrypt(ct)
		dump(fmt.Sprint("decrypt ", i), pt, err)
	}
	// ECDH with our own public keys, the generator, and a bad point.
	g, _ := hex.DecodeString("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
	pk, _ := guest.PublicKey(guest.PrimaryPair)
	ppk, _ := guest.PublicKey(guest.PrivilegedPair)
	for i, p := range [][]byte{g, pk, ppk, make([]byte, 33)} {
		s, err := guest.ECDH(p)
		dump(fmt.Sprint("ecdh ", i), s, err)
	}
	// A ciphertext the System sealed under the primary key itself.
	if len(args) >= 1 {
		sealed, err := os.ReadFile(args[0])
		dump("sealed", sealed, err)
		pt, err := guest.Decrypt(sealed)
		dump("decrypt-system", pt, err)
	}
	if len(args) >= 2 {
		if id, err := hex.DecodeString(args[1]); err == nil && len(id) == 32 {
			tx, err := guest.GetTx([32]byte(id))
			dump("get_tx", tx, err)
			as, err := guest.TxAddresses([32]byte(id))
			dump("tx_addresses", []byte(strings.Join(as, ",")), err)
			for _, a := range as {
				txs, err := guest.AddressTxs(a)
				dump("address_txs "+a, []byte(fmt.Sprint(txs)), err)
				c, u, err := guest.Balance(a)
				dump("balance "+a, []byte(fmt.Sprint(c, u)), err)
			}
		}
	}
	if id.RootAddress != "" {
		txs, err := guest.AddressTxs(id.RootAddress)
		dump("address_txs root", []byte(fmt.Sprint(txs)), err)
		for _, t := range txs {
			raw, err := guest.GetTx(t.TxID)
			dump("get_tx root", raw, err)
		}
	}
	h, err := guest.TipHeight()
	dump("tip_height", []byte(fmt.Sprint(h)), err)
	dump("publish", nil, guest.Publish("/", true))
	dump("share", nil, guest.Share("/", "02"+strings.Repeat("11", 32), true))
	ref, err := guest.CreateImage("/", true)
	dump("image_create", []byte(ref), err)
	dump("image_mount", nil, guest.MountImage("x", "/mnt"))
	dump("image_unmount", nil, guest.UnmountImage("/"))
	addrs, err := guest.Resolve("localhost")
	dump("resolve", []byte(fmt.Sprint(addrs)), err)
	var f uint32
	c := guest.RawFeatures(uint32(uintptr(unsafe.Pointer(&f))))
	dump("features", []byte(fmt.Sprint(f)), guest.Code(c))
}

// Raw addresses for badptr.
const (
	past = 0xfffffff0 // beyond any memory
	huge = 0xffffffff
)

func p(b []byte) uint32         { return uint32(uintptr(unsafe.Pointer(&b[0]))) }
func ps(s string) uint32        { return uint32(uintptr(unsafe.Pointer(unsafe.StringData(s)))) }
func report(n string, c uint32) { fmt.Fprintf(out, "%s %d\n", n, c) }

// badptr calls each function with bad input.
func badptr() {
	defer out.Flush()
	buf := make([]byte, 4096)
	var n uint32
	np := uint32(uintptr(unsafe.Pointer(&n)))
	addr := "bcrt1qxyz"
	long := strings.Repeat("a", 5000)
	notUTF8 := string([]byte{0xff, 0xfe, 0xfd})
	txid := make([]byte, 32)

	// blockchain
	report("address_txs/addr-past", guest.RawAddressTxs(past, 10, p(buf), 4096, np))
	report("address_txs/addr-huge", guest.RawAddressTxs(ps(addr), huge, p(buf), 4096, np))
	report("address_txs/out-past", guest.RawAddressTxs(ps(addr), uint32(len(addr)), past, 4096, np))
	report("address_txs/outcap-huge", guest.RawAddressTxs(ps(addr), uint32(len(addr)), p(buf), huge, np))
	report("address_txs/outlen-past", guest.RawAddressTxs(ps(addr), uint32(len(addr)), p(buf), 4096, past))
	report("address_txs/not-utf8", guest.RawAddressTxs(ps(notUTF8), 3, p(buf), 4096, np))
	report("address_txs/empty", guest.RawAddressTxs(0, 0, p(buf), 4096, np))
	report("balance/out-past", guest.RawBalance(ps(addr), uint32(len(addr)), past))
	report("balance/addr-huge", guest.RawBalance(ps(addr), huge, p(buf)))
	report("tx_addresses/txid-past", guest.RawTxAddresses(past, p(buf), 4096, np))
	report("get_tx/out-huge", guest.RawGetTx(p(txid), p(buf), huge, np))
	report("broadcast/tx-huge", guest.RawBroadcast(p(buf), huge, p(buf)))
	report("broadcast/tx-past", guest.RawBroadcast(past, 100, p(buf)))
	report("broadcast/garbage", guest.RawBroadcast(p(buf), 100, p(buf)))
	report("tip_height/out-past", guest.RawTipHeight(past))

	// filesystem
	for name, path := range map[string]string{
		"relative": "docs", "dotdot": "/../..", "nul": "/a\x00b", "long": "/" + long, "notutf8": "/" + notUTF8,
		"missing": "/no/such/folder",
	} {
		report("publish/"+name, guest.RawPublish(ps(path), uint32(len(path)), 0))
		report("share/"+name, guest.RawShare(ps(path), uint32(len(path)), ps("bob"), 3, 0))
		report("image_unmount/"+name, guest.RawImageUnmount(ps(path), uint32(len(path))))
	}
	report("publish/path-huge", guest.RawPublish(ps("/"), huge, 0))
	report("publish/path-past", guest.RawPublish(past, 1, 0))
	report("publish/bad-flags", guest.RawPublish(ps("/"), 1, 0xff))
	report("share/to-huge", guest.RawShare(ps("/"), 1, ps("bob"), huge, 0))
	report("share/to-control", guest.RawShare(ps("/"), 1, ps("b\nob"), 4, 0))
	report("image_create/out-past", guest.RawImageCreate(ps("/"), 1, 0, past, 100, np))
	report("image_mount/ref-huge", guest.RawImageMount(ps("x"), huge, ps("/"), 1))

	// identity
	report("info/out-past", guest.RawInfo(past, 100, np))
	report("info/outlen-past", guest.RawInfo(p(buf), 4096, past))
	report("public_key/bad-which", guest.RawPublicKey(7, p(buf), 4096, np))
	report("public_key/short", guest.RawPublicKey(0, p(buf), 1, np))
	report("encrypt/in-huge", guest.RawEncrypt(p(buf), huge, p(buf), 4096, np))
	report("encrypt/in-past", guest.RawEncrypt(past, 64, p(buf), 4096, np))
	report("decrypt/garbage", guest.RawDecrypt(p(buf), 100, p(buf), 4096, np))
	report("decrypt/short", guest.RawDecrypt(p(buf), 3, p(buf), 4096, np))
	report("sign/bad-which", guest.RawSign(9, p(buf), 10, p(buf), 4096, np))
	report("sign/msg-huge", guest.RawSign(0, p(buf), huge, p(buf), 4096, np))
	report("sign/out-past", guest.RawSign(0, p(buf), 10, past, 4096, np))
	report("verify/garbage", guest.RawVerify(p(buf), 33, p(buf), 10, p(buf), 70))
	report("verify/pub-huge", guest.RawVerify(p(buf), huge, p(buf), 10, p(buf), 70))
	report("ecdh/bad-point", guest.RawECDH(p(buf), 33, p(buf), 4096, np))
	report("ecdh/pub-huge", guest.RawECDH(p(buf), huge, p(buf), 4096, np))

	// network
	report("features/out-past", guest.RawFeatures(past))
	report("resolve/name-huge", guest.RawResolve(ps("x"), huge, p(buf), 4096, np))
	report("resolve/name-bad", guest.RawResolve(ps("a b"), 3, p(buf), 4096, np))
	report("resolve/name-long", guest.RawResolve(ps(long), 300, p(buf), 4096, np))
	report("tcp_connect/port-0", guest.RawTCPConnect(ps("localhost"), 9, 0, 10, np))
	report("tcp_connect/port-big", guest.RawTCPConnect(ps("localhost"), 9, 70000, 10, np))
	report("tcp_connect/host-past", guest.RawTCPConnect(past, 9, 80, 10, np))
	report("tcp_send/bad-handle", guest.RawTCPSend(12345, p(buf), 10, 10, np))
	report("tcp_recv/bad-handle", guest.RawTCPRecv(12345, p(buf), 10, 10, np))
	report("tcp_close/bad-handle", guest.RawTCPClose(0))
	report("frame_send", guest.RawFrameSend(p(buf), 60))

	// WASI with bad paths: errors, not crashes.
	for _, path := range []string{"/../../etc/passwd", "/" + long, "/a\x00b"} {
		_, err := os.ReadFile(path)
		fmt.Fprintf(out, "wasi-open %q %v\n", path[:min(len(path), 20)], err != nil)
	}
	fmt.Fprintln(out, "survived")
}

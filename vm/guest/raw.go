//go:build wasip1

package guest

// The host functions as the ABI declares them (docs/VM-ABI.md): every
// argument an i32, every result a Code. Pointers are addresses in this
// module's linear memory. Use the typed wrappers unless you mean to pass
// raw addresses.

//go:wasmimport blockchain address_txs
func RawAddressTxs(addr, addrLen, out, outCap, outLen uint32) uint32

//go:wasmimport blockchain balance
func RawBalance(addr, addrLen, out16 uint32) uint32

//go:wasmimport blockchain tx_addresses
func RawTxAddresses(txid, out, outCap, outLen uint32) uint32

//go:wasmimport blockchain get_tx
func RawGetTx(txid, out, outCap, outLen uint32) uint32

//go:wasmimport blockchain broadcast
func RawBroadcast(tx, txLen, outTxID uint32) uint32

//go:wasmimport blockchain tip_height
func RawTipHeight(out uint32) uint32

//go:wasmimport filesystem publish
func RawPublish(path, pathLen, flags uint32) uint32

//go:wasmimport filesystem share
func RawShare(path, pathLen, to, toLen, flags uint32) uint32

//go:wasmimport filesystem image_create
func RawImageCreate(path, pathLen, flags, out, outCap, outLen uint32) uint32

//go:wasmimport filesystem image_mount
func RawImageMount(ref, refLen, path, pathLen uint32) uint32

//go:wasmimport filesystem image_unmount
func RawImageUnmount(path, pathLen uint32) uint32

//go:wasmimport identity info
func RawInfo(out, outCap, outLen uint32) uint32

//go:wasmimport identity public_key
func RawPublicKey(which, out, outCap, outLen uint32) uint32

//go:wasmimport identity encrypt
func RawEncrypt(data, dataLen, out, outCap, outLen uint32) uint32

//go:wasmimport identity decrypt
func RawDecrypt(data, dataLen, out, outCap, outLen uint32) uint32

//go:wasmimport identity sign
func RawSign(which, msg, msgLen, out, outCap, outLen uint32) uint32

//go:wasmimport identity verify
func RawVerify(pub, pubLen, msg, msgLen, sig, sigLen uint32) uint32

//go:wasmimport identity ecdh
func RawECDH(pub, pubLen, out, outCap, outLen uint32) uint32

//go:wasmimport network features
func RawFeatures(out uint32) uint32

//go:wasmimport network resolve
func RawResolve(name, nameLen, out, outCap, outLen uint32) uint32

//go:wasmimport network tcp_connect
func RawTCPConnect(host, hostLen, port, timeoutMS, outHandle uint32) uint32

//go:wasmimport network tcp_send
func RawTCPSend(handle, data, dataLen, timeoutMS, outN uint32) uint32

//go:wasmimport network tcp_recv
func RawTCPRecv(handle, buf, bufCap, timeoutMS, outN uint32) uint32

//go:wasmimport network tcp_close
func RawTCPClose(handle uint32) uint32

//go:wasmimport network frame_send
func RawFrameSend(frame, frameLen uint32) uint32

//go:wasmimport network frame_recv
func RawFrameRecv(buf, bufCap, timeoutMS, outLen uint32) uint32

// Package imageserver is the paper's Image Server and its client:
// content-addressed hosting of mountable images (chainfs/image) and
// encrypted blobs (chainfs/blob), paid on chain. A client asks for a
// quote, pays the quote's own address with a real transaction, uploads
// (the server stores nothing it has not hashed), and anyone downloads by
// hash — whole, or by range — checking what they get. The image's owner
// (the mount node's write key) registers at upload and later patches the
// image with a signed diff or releases it with a signed message.
//
// Server is an http.Handler over a Badger state database and a blob.Dir,
// configured by Config and Policy (`integrity image-server --listen ADDR
// --data DIR --policy ...`). Client has a method per endpoint and typed
// errors; Store is a blob.Store over one server, so blob.Multi over
// several gives reads that skip — and report — a server serving wrong
// bytes. docs/IMAGE-SERVER.md is the API's specification.
package imageserver

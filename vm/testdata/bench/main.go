//go:build wasip1

// Command bench is the guest of the VM's benchmarks:
//
//	calls N              time N network.features calls (pure host-call
//	                     overhead) and N/100 blockchain.tip_height calls;
//	                     print "features NS" and "tip_height NS" per call
//	write PATH MIB BLOCK write MIB MiB to PATH in BLOCK-byte writes, close;
//	                     print "write NS" for the whole (write and close)
//	echo HOST PORT MSG   resolve HOST, connect, send MSG, print what comes
//	                     back until the peer closes
//	resolve NAME         print NAME's addresses or the error code
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
	"unsafe"

	"github.com/integrity-sys/integrity/vm/guest"
)

func main() {
	switch os.Args[1] {
	case "calls":
		n, _ := strconv.Atoi(os.Args[2])
		var f uint32
		p := uint32(uintptr(unsafe.Pointer(&f)))
		t0 := time.Now()
		for range n {
			if c := guest.RawFeatures(p); c != 0 {
				fail(guest.Code(c))
			}
		}
		fmt.Printf("features %d\n", time.Since(t0).Nanoseconds()/int64(n))
		m := max(n/100, 1)
		t0 = time.Now()
		for range m {
			if _, err := guest.TipHeight(); err != nil {
				fail(err)
			}
		}
		fmt.Printf("tip_height %d\n", time.Since(t0).Nanoseconds()/int64(m))
	case "echo":
		port, _ := strconv.Atoi(os.Args[3])
		addrs, err := guest.Resolve(os.Args[2])
		fmt.Printf("resolved %v %v\n", addrs, err)
		c, err := guest.Dial(os.Args[2], uint16(port), 5000)
		if err != nil {
			fail(err)
		}
		if _, err := c.Write([]byte(os.Args[4])); err != nil {
			fail(err)
		}
		var got []byte
		buf := make([]byte, 7)
		for {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				fmt.Printf("read %q until %v\n", got, err)
				break
			}
		}
		fmt.Printf("close %v\n", c.Close())
		fmt.Printf("close-again %v\n", c.Close())
	case "resolve":
		addrs, err := guest.Resolve(os.Args[2])
		fmt.Printf("%v %v\n", addrs, err)
	case "write":
		mib, _ := strconv.Atoi(os.Args[3])
		bs, _ := strconv.Atoi(os.Args[4])
		buf := make([]byte, bs)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		t0 := time.Now()
		f, err := os.Create(os.Args[2])
		if err != nil {
			fail(err)
		}
		for done := 0; done < mib<<20; done += bs {
			if _, err := f.Write(buf); err != nil {
				fail(err)
			}
		}
		if err := f.Close(); err != nil {
			fail(err)
		}
		fmt.Printf("write %d\n", time.Since(t0).Nanoseconds())
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

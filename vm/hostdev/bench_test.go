package hostdev

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/integrity-sys/integrity/chainfs"
	"github.com/integrity-sys/integrity/fuse"
	"github.com/integrity-sys/integrity/vm"
)

// The VM's benchmarks (make bench, section vm):
//
//	go test -run '^$' -bench . -benchtime 3x ./vm/hostdev/
//
// Each reports its figure as a custom metric: ms/boot, ns/call, MiB/s.

// bootOS boots the sample OS, which exits at once.
func bootOS(b *testing.B, r *vm.Runtime, mod []byte, tr *chainfs.Tree) {
	b.Helper()
	var out bytes.Buffer
	if err := r.Boot(context.Background(), vm.Machine{Module: mod, Stdin: strings.NewReader("exit\n"), Stdout: &out,
		Disk: Tree{T: tr}}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkBootCold: a boot with an empty compilation cache (the first
// boot of an OS on a device): compile, instantiate, run to exit.
func BenchmarkBootCold(b *testing.B) {
	s := newSystem(b)
	tr := s.open(b)
	mod := module(b, "./vm/os")
	b.ResetTimer()
	for range b.N {
		r, err := vm.New(vm.Options{CacheDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		bootOS(b, r, mod, tr)
		r.Close(context.Background())
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/boot")
}

// BenchmarkBootWarm: a boot in a new process's runtime whose compilation
// cache directory holds the OS already (every boot after the first).
func BenchmarkBootWarm(b *testing.B) {
	s := newSystem(b)
	tr := s.open(b)
	mod := module(b, "./vm/os")
	dir := b.TempDir()
	warm, err := vm.New(vm.Options{CacheDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	bootOS(b, warm, mod, tr)
	warm.Close(context.Background())
	b.ResetTimer()
	for range b.N {
		r, err := vm.New(vm.Options{CacheDir: dir})
		if err != nil {
			b.Fatal(err)
		}
		bootOS(b, r, mod, tr)
		r.Close(context.Background())
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/boot")
}

// guestFigures runs the bench guest and parses its "name value" lines.
func guestFigures(b *testing.B, m vm.Machine) map[string]float64 {
	b.Helper()
	var out, errb bytes.Buffer
	m.Module, m.Stdout, m.Stderr = module(b, "./vm/testdata/bench"), &out, &errb
	if err := newRuntime(b).Boot(context.Background(), m); err != nil {
		b.Fatalf("%v: %s", err, errb.String())
	}
	res := map[string]float64{}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		k, v, _ := strings.Cut(l, " ")
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			b.Fatalf("bad line %q", l)
		}
		res[k] = f
	}
	return res
}

// BenchmarkHostCall: the cost of one host call as the guest sees it —
// network.features (the bare guest→host→guest transition) and
// blockchain.tip_height (a query of the embedded chain).
func BenchmarkHostCall(b *testing.B) {
	s := newSystem(b)
	var feat, tip float64
	for range b.N {
		f := guestFigures(b, vm.Machine{Args: []string{"bench", "calls", "200000"}, Chain: Chain{Backend: s.backend}})
		feat += f["features"]
		tip += f["tip_height"]
	}
	b.ReportMetric(feat/float64(b.N), "ns/call")
	b.ReportMetric(tip/float64(b.N), "ns/chain-call")
}

const (
	writeMiB   = 32
	writeBlock = 128 << 10
)

// BenchmarkGuestWrite: a guest writes a 32 MiB file in 128 KiB writes to
// the tree and closes it (as fio's seq-write does on the mount).
func BenchmarkGuestWrite(b *testing.B) {
	s := newSystem(b)
	tr := s.open(b)
	var ns float64
	for i := range b.N {
		f := guestFigures(b, vm.Machine{Args: []string{"bench", "write", fmt.Sprintf("/guest-%d", i),
			strconv.Itoa(writeMiB), strconv.Itoa(writeBlock)}, Disk: Tree{T: tr}})
		ns += f["write"]
	}
	b.ReportMetric(float64(writeMiB*b.N)/(ns/1e9), "MiB/s")
}

// BenchmarkMountWrite: the same file written through a FUSE mount of the
// same kind of tree, by a host process.
func BenchmarkMountWrite(b *testing.B) {
	s := newSystem(b)
	tr := s.open(b)
	dir := filepath.Join(b.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	srv, err := fuse.Mount(dir, fuse.Tree{T: tr}, fuse.Options{})
	if err != nil {
		b.Skipf("no FUSE mount here: %v", err)
	}
	b.Cleanup(func() {
		for range 50 {
			if srv.Unmount() == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	buf := make([]byte, writeBlock)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	var ns float64
	for i := range b.N {
		t0 := time.Now()
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("mount-%d", i)))
		if err != nil {
			b.Fatal(err)
		}
		for done := 0; done < writeMiB<<20; done += writeBlock {
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		ns += float64(time.Since(t0).Nanoseconds())
	}
	b.ReportMetric(float64(writeMiB*b.N)/(ns/1e9), "MiB/s")
}

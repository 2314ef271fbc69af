package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/ecdsa"

	"github.com/integrity-sys/integrity/vm/guest"
)

func hostile(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(builder.Build(t, "./vm/testdata/hostile"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Fakes for this package's unit tests (vm/hostdev runs the real ones).
type fakeChain struct{}

func (fakeChain) AddressTxs(context.Context, string) ([]TxRef, error) { return nil, nil }
func (fakeChain) Balance(context.Context, string) (Balance, error)    { return Balance{}, nil }
func (fakeChain) TxAddresses(context.Context, [32]byte) ([]string, error) {
	return nil, ErrNoSuch
}
func (fakeChain) GetTx(context.Context, [32]byte) ([]byte, error)     { return nil, ErrNoSuch }
func (fakeChain) Broadcast(context.Context, []byte) ([32]byte, error) { return [32]byte{}, ErrBadInput }
func (fakeChain) TipHeight(context.Context) (int32, error)            { return 7, nil }

type fakeIdentity struct{ key *btcec.PrivateKey }

func (f fakeIdentity) Info(context.Context) (IdentityInfo, error) {
	return IdentityInfo{User: "t"}, nil
}
func (f fakeIdentity) PublicKey(context.Context, KeyPair) ([]byte, error) {
	return f.key.PubKey().SerializeCompressed(), nil
}
func (f fakeIdentity) Encrypt(_ context.Context, b []byte) ([]byte, error) {
	return append([]byte("sealed:"), b...), nil
}
func (f fakeIdentity) Decrypt(_ context.Context, b []byte) ([]byte, error) {
	if !bytes.HasPrefix(b, []byte("sealed:")) {
		return nil, ErrBadCipher
	}
	return b[7:], nil
}
func (f fakeIdentity) Sign(_ context.Context, w KeyPair, msg []byte) ([]byte, error) {
	if w == PrivilegedPair {
		return nil, ErrPrivLocked
	}
	d := MessageDigest(msg)
	return ecdsa.Sign(f.key, d[:]).Serialize(), nil
}
func (f fakeIdentity) ECDH(context.Context, []byte) ([]byte, error) { return nil, ErrPrivLocked }

type fakeNet struct{}

func (fakeNet) Resolve(context.Context, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}
func (fakeNet) DialTCP(context.Context, string, uint16) (net.Conn, error) {
	return nil, errors.New("no")
}

// TestBadInputFromGuest: out-of-bounds pointers, huge lengths, invalid
// paths and arguments, unknown handles — every call answers with an error
// code and the host keeps running.
func TestBadInputFromGuest(t *testing.T) {
	r := newRuntime(t, Options{})
	key, _ := btcec.NewPrivateKey()
	var out, errb bytes.Buffer
	err := r.Boot(context.Background(), Machine{Module: hostile(t), Args: []string{"hostile", "badptr"},
		Stdout: &out, Stderr: &errb, Disk: newMemTree(), Chain: fakeChain{}, Identity: fakeIdentity{key},
		Network: fakeNet{}, Timeout: time.Minute})
	if err != nil {
		t.Fatalf("boot: %v: %s", err, errb.String())
	}
	got := map[string]guest.Code{}
	sc := bufio.NewScanner(&out)
	survived := false
	for sc.Scan() {
		line := sc.Text()
		if line == "survived" {
			survived = true
			continue
		}
		if strings.HasPrefix(line, "wasi-open") {
			if !strings.HasSuffix(line, " true") {
				t.Errorf("WASI accepted a bad path: %s", line)
			}
			continue
		}
		name, code, ok := strings.Cut(line, " ")
		n, err := strconv.Atoi(code)
		if !ok || err != nil {
			t.Fatalf("bad line %q", line)
		}
		got[name] = guest.Code(n)
	}
	if !survived {
		t.Fatalf("the guest did not finish: %s", out.String())
	}
	want := map[string]guest.Code{
		"address_txs/addr-past": guest.ErrFault, "address_txs/addr-huge": guest.ErrTooBig,
		"address_txs/out-past": guest.ErrFault, "address_txs/outcap-huge": guest.ErrFault,
		"address_txs/outlen-past": guest.ErrFault, "address_txs/not-utf8": guest.ErrInvalid,
		"address_txs/empty": guest.ErrInvalid, "balance/out-past": guest.ErrFault, "balance/addr-huge": guest.ErrTooBig,
		"tx_addresses/txid-past": guest.ErrFault, "get_tx/out-huge": guest.ErrFault,
		"broadcast/tx-huge": guest.ErrTooBig, "broadcast/tx-past": guest.ErrFault, "broadcast/garbage": guest.ErrInvalid,
		"tip_height/out-past": guest.ErrFault,
		"publish/path-huge":   guest.ErrTooBig, "publish/path-past": guest.ErrFault, "publish/bad-flags": guest.ErrInvalid,
		"share/to-huge": guest.ErrTooBig, "share/to-control": guest.ErrInvalid,
		"image_create/out-past": guest.ErrFault, "image_mount/ref-huge": guest.ErrTooBig,
		"info/out-past": guest.ErrFault, "info/outlen-past": guest.ErrFault,
		"public_key/bad-which": guest.ErrInvalid, "public_key/short": guest.ErrShortBuffer,
		"encrypt/in-huge": guest.ErrTooBig, "encrypt/in-past": guest.ErrFault,
		"decrypt/garbage": guest.ErrDecrypt, "decrypt/short": guest.ErrDecrypt,
		"sign/bad-which": guest.ErrInvalid, "sign/msg-huge": guest.ErrTooBig, "sign/out-past": guest.ErrFault,
		"verify/pub-huge": guest.ErrTooBig, "ecdh/pub-huge": guest.ErrTooBig,
		"features/out-past": guest.ErrFault, "resolve/name-huge": guest.ErrTooBig,
		"resolve/name-bad": guest.ErrInvalid, "resolve/name-long": guest.ErrTooBig,
		"tcp_connect/port-0": guest.ErrInvalid, "tcp_connect/port-big": guest.ErrInvalid,
		"tcp_connect/host-past": guest.ErrFault, "tcp_send/bad-handle": guest.ErrBadHandle,
		"tcp_recv/bad-handle": guest.ErrBadHandle, "tcp_close/bad-handle": guest.ErrBadHandle,
		"frame_send": guest.ErrUnsupported,
	}
	for _, op := range []string{"publish", "share", "image_unmount"} {
		for name, c := range map[string]guest.Code{"relative": guest.ErrInvalid, "dotdot": guest.ErrInvalid,
			"nul": guest.ErrInvalid, "long": guest.ErrTooBig, "notutf8": guest.ErrInvalid, "missing": guest.ErrNotFound} {
			want[op+"/"+name] = c
		}
	}
	for name, c := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: not reported", name)
		} else if g != c {
			t.Errorf("%s: got %v, want %v", name, g, c)
		}
	}
	for name, c := range got {
		if c == guest.OK {
			t.Errorf("%s: bad input accepted", name)
		}
		if c == guest.ErrInternal {
			t.Errorf("%s: host fault", name)
		}
	}
	// The same runtime boots a healthy guest afterwards.
	out.Reset()
	if err := r.Boot(context.Background(), Machine{Module: sampleOS(t), Stdin: strings.NewReader("pwd\n"), Stdout: &out,
		Disk: newMemTree()}); err != nil || out.String() != "/\n" {
		t.Fatalf("boot after attack: %v, %q", err, out.String())
	}
}

// TestCodesMatchGuest: the guest driver's code table is the host's.
func TestCodesMatchGuest(t *testing.T) {
	for i, name := range guest.CodeNames {
		if Code(i).String() != name {
			t.Errorf("code %d: host %q, guest %q", i, Code(i).String(), name)
		}
	}
	if len(guest.CodeNames) != len(codeNames) {
		t.Errorf("host has %d codes, guest %d", len(codeNames), len(guest.CodeNames))
	}
}

// watchHost measures, while a guest runs, how late a ticker fires and how
// long a forced GC takes: a guest must never stall the rest of the agent.
func watchHost(ctx context.Context) (stop func() (maxLate, maxGC time.Duration)) {
	var late, gc atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				if d := now.Sub(last) - 50*time.Millisecond; d > time.Duration(late.Load()) {
					late.Store(int64(d))
				}
				last = now
				t0 := time.Now()
				runtime.GC()
				if d := time.Since(t0); d > time.Duration(gc.Load()) {
					gc.Store(int64(d))
				}
			}
		}
	}()
	return func() (time.Duration, time.Duration) {
		<-done
		return time.Duration(late.Load()), time.Duration(gc.Load())
	}
}

// TestRunawayGuestStopped: a guest that spins forever is stopped at its
// time limit, and the host keeps scheduling and collecting garbage
// meanwhile.
func TestRunawayGuestStopped(t *testing.T) {
	r := newRuntime(t, Options{})
	mod := hostile(t)
	ctx, cancel := context.WithCancel(context.Background())
	stop := watchHost(ctx)
	t0 := time.Now()
	err := r.Boot(context.Background(), Machine{Module: mod, Args: []string{"hostile", "loop"}, Timeout: 2 * time.Second})
	took := time.Since(t0)
	cancel()
	late, gc := stop()
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Reason != "timeout" {
		t.Fatalf("boot: %v", err)
	}
	if took > 15*time.Second {
		t.Fatalf("stopping took %v", took)
	}
	t.Logf("stopped after %v; host meanwhile: ticker at most %v late, GC at most %v", took, late, gc)
	if late > time.Second || gc > time.Second {
		t.Fatalf("the spinning guest stalled the host: ticker %v late, GC %v", late, gc)
	}
	// Cancellation by the caller works the same.
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	err = r.Boot(ctx2, Machine{Module: mod, Args: []string{"hostile", "loop"}})
	if !errors.As(err, &ee) || (ee.Reason != "timeout" && ee.Reason != "canceled") {
		t.Fatalf("boot with a canceled context: %v", err)
	}
}

// TestMemoryCap: a guest that allocates without end hits the page cap and
// dies; the host is fine and boots the next guest.
func TestMemoryCap(t *testing.T) {
	r := newRuntime(t, Options{MemoryPages: 1024}) // 64 MiB
	var errb bytes.Buffer
	mod := hostile(t)
	if err := r.Check(context.Background(), mod); err != nil { // compiled before measuring
		t.Fatal(err)
	}
	// The host's resident memory is sampled while the guest grows: what
	// it takes is bounded by the cap, not by what the guest asks for.
	runtime.GC()
	before := rss()
	if before < 0 {
		t.Skip("no /proc/self/statm here")
	}
	var peak int64
	sampling, stopSampling := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampling.Err() == nil {
			peak = max(peak, rss())
			time.Sleep(2 * time.Millisecond)
		}
	}()
	t0 := time.Now()
	err := r.Boot(context.Background(), Machine{Module: mod, Args: []string{"hostile", "oom"}, Stderr: &errb,
		Timeout: time.Minute})
	stopSampling()
	<-sampled
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Reason == "timeout" {
		t.Fatalf("boot: %v (stderr %q)", err, errb.String())
	}
	grew := peak - before
	t.Logf("out-of-memory guest ended after %v: %v; host memory grew by at most %d MiB; its stderr: %.200s",
		time.Since(t0), err, grew>>20, errb.String())
	if grew > 64<<20+16<<20 {
		t.Fatalf("a guest capped at 64 MiB grew the host by %d MiB", grew>>20)
	}
	var out bytes.Buffer
	if err := r.Boot(context.Background(), Machine{Module: sampleOS(t), Stdin: strings.NewReader("pwd\n"), Stdout: &out,
		Disk: newMemTree()}); err != nil || out.String() != "/\n" {
		t.Fatalf("boot after out-of-memory: %v, %q", err, out.String())
	}
}

// rss is this process's resident memory in bytes (-1 if unknown).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return -1
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return -1
	}
	return pages * int64(os.Getpagesize())
}

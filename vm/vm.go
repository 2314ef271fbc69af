package vm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
)

// Options configure a Runtime.
type Options struct {
	// CacheDir keeps compiled machine code across processes, so the
	// second boot of a module skips compilation. Empty: in memory only.
	CacheDir string
	// MemoryPages caps a guest's linear memory in 64 KiB pages (default
	// DefaultMemoryPages).
	MemoryPages uint32
	Logger      *slog.Logger
}

// DefaultMemoryPages is 256 MiB.
const DefaultMemoryPages = 4096

// Runtime boots machines. It is safe for concurrent use; each boot gets
// its own wazero runtime (so one guest's failure cannot touch another)
// sharing one compilation cache.
type Runtime struct {
	opts  Options
	log   *slog.Logger
	cache wazero.CompilationCache
}

// New returns a Runtime.
func New(opts Options) (*Runtime, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MemoryPages == 0 {
		opts.MemoryPages = DefaultMemoryPages
	}
	if opts.MemoryPages > 65536 {
		return nil, fmt.Errorf("vm: memory cap of %d pages exceeds wasm32's 65536", opts.MemoryPages)
	}
	r := &Runtime{opts: opts, log: opts.Logger}
	if opts.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(opts.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("vm: compilation cache %s: %w", opts.CacheDir, err)
		}
		r.cache = c
	} else {
		r.cache = wazero.NewCompilationCache()
	}
	return r, nil
}

// Close releases the compilation cache (files on disk stay).
func (r *Runtime) Close(ctx context.Context) error { return r.cache.Close(ctx) }

// config is every runtime's: Check must compile exactly as Boot does, or
// the code it caches would not be the code Boot looks for.
func (r *Runtime) config() wazero.RuntimeConfig {
	return wazero.NewRuntimeConfig().
		WithCompilationCache(r.cache).
		WithCloseOnContextDone(true). // loops and calls check for cancellation
		WithMemoryLimitPages(r.opts.MemoryPages)
}

// Machine is one boot: the module to run and the hardware it sees.
type Machine struct {
	// Module is the WebAssembly (wasip1) binary: the bootloader or an OS.
	Module []byte
	// Args are the guest's argv (Args[0] is its name); Env its
	// environment ("KEY=value").
	Args []string
	Env  []string
	// The console.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Disk is the guest's "/" (nil: no filesystem).
	Disk Tree
	// The host modules' devices; a nil device answers ErrUnsupported.
	Chain    Blockchain
	Sharing  Sharing
	Identity Identity
	Unlocker Unlocker
	Network  Network
	// Timeout stops the guest after this long (0: only ctx stops it).
	Timeout time.Duration
}

// ExitError reports how a guest ended when it did not exit with 0.
type ExitError struct {
	Code   uint32
	Reason string // "exit", "timeout", "canceled", "trap"
	Err    error
}

func (e *ExitError) Error() string {
	switch e.Reason {
	case "exit":
		return fmt.Sprintf("vm: guest exited with status %d", e.Code)
	case "timeout":
		return "vm: guest stopped: time limit reached"
	case "canceled":
		return "vm: guest stopped"
	}
	return fmt.Sprintf("vm: guest crashed: %v", e.Err)
}

func (e *ExitError) Unwrap() error { return e.Err }

// Boot runs a machine until its guest exits, ctx ends, or its Timeout
// passes. It returns nil when the guest exited with status 0, an
// *ExitError when it ended otherwise (a non-zero exit, a trap such as
// running out of memory, a time limit), and another error when the
// machine could not start.
func (r *Runtime) Boot(ctx context.Context, m Machine) error {
	if len(m.Module) == 0 {
		return errors.New("vm: no module to boot")
	}
	if m.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.Timeout)
		defer cancel()
	}
	rt := wazero.NewRuntimeWithConfig(ctx, r.config())
	// The runtime is closed with a fresh context: ctx may be done.
	defer rt.Close(context.WithoutCancel(ctx))

	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		return fmt.Errorf("vm: wasi: %w", err)
	}
	cs := &conns{open: map[uint32]net.Conn{}}
	stop := context.AfterFunc(ctx, cs.closeAll) // unblock network calls
	defer stop()
	defer cs.closeAll()
	for _, b := range []wazero.HostModuleBuilder{
		blockchainModule(rt, m.Chain, r.log),
		filesystemModule(rt, m.Sharing, m.Disk, m.Unlocker, r.log),
		identityModule(rt, m.Identity, m.Unlocker, r.log),
		networkModule(rt, m.Network, cs, r.log),
	} {
		if _, err := b.Instantiate(ctx); err != nil {
			return fmt.Errorf("vm: host module: %w", err)
		}
	}
	t0 := time.Now()
	mod, err := rt.CompileModule(ctx, m.Module)
	if err != nil {
		return fmt.Errorf("vm: compile: %w", err)
	}
	r.log.Debug("vm: compiled", "bytes", len(m.Module), "took", time.Since(t0))
	defer mod.Close(context.WithoutCancel(ctx))

	stdin := m.Stdin
	if stdin == nil {
		stdin = eofReader{}
	}
	mc := wazero.NewModuleConfig().
		WithArgs(m.Args...).
		WithStdin(stdin).
		WithStdout(orDiscard(m.Stdout)).
		WithStderr(orDiscard(m.Stderr)).
		WithSysWalltime().WithSysNanotime().WithSysNanosleep().
		WithRandSource(rand.Reader).
		WithName("")
	for _, kv := range m.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("vm: environment entry %q is not KEY=value", kv)
		}
		mc = mc.WithEnv(k, v)
	}
	if m.Disk != nil {
		mc = mc.WithFSConfig(wazero.NewFSConfig().(sysfs.FSConfig).WithSysFSMount(NewDisk(ctx, m.Disk, r.log), "/"))
	}
	ictx := experimental.WithMemoryAllocator(ctx, experimental.MemoryAllocatorFunc(allocateMemory))
	_, err = rt.InstantiateModule(ictx, mod, mc)
	return exitOf(ctx, err)
}

// hostModule reports whether a guest may import module name.
func hostModule(name string) bool {
	switch name {
	case wasi_snapshot_preview1.ModuleName, "blockchain", "filesystem", "identity", "network":
		return true
	}
	return false
}

// Check compiles a module (warming the compilation cache) and checks that
// the VM can boot it: a wasip1 command exporting _start and importing only
// WASI and the host modules.
func (r *Runtime) Check(ctx context.Context, module []byte) error {
	rt := wazero.NewRuntimeWithConfig(ctx, r.config())
	defer rt.Close(context.WithoutCancel(ctx))
	mod, err := rt.CompileModule(ctx, module)
	if err != nil {
		return fmt.Errorf("vm: not a WebAssembly module the VM can run: %w", err)
	}
	defer mod.Close(context.WithoutCancel(ctx))
	if _, ok := mod.ExportedFunctions()["_start"]; !ok {
		return errors.New("vm: the module exports no _start: build it as a wasip1 command (GOOS=wasip1 GOARCH=wasm)")
	}
	// The imports are resolved against the very modules Boot provides
	// (with no devices behind them), so a misspelt function or a wrong
	// signature is found at install, not at the next boot.
	have := map[string]map[string]api.FunctionDefinition{}
	wasi, err := wasi_snapshot_preview1.NewBuilder(rt).Compile(ctx)
	if err != nil {
		return fmt.Errorf("vm: wasi: %w", err)
	}
	have[wasi.Name()] = wasi.ExportedFunctions()
	for _, b := range []wazero.HostModuleBuilder{
		blockchainModule(rt, nil, r.log),
		filesystemModule(rt, nil, nil, nil, r.log),
		identityModule(rt, nil, nil, r.log),
		networkModule(rt, nil, nil, r.log),
	} {
		cm, err := b.Compile(ctx)
		if err != nil {
			return fmt.Errorf("vm: host module: %w", err)
		}
		have[cm.Name()] = cm.ExportedFunctions()
	}
	for _, f := range mod.ImportedFunctions() {
		m, name, _ := f.Import()
		if !hostModule(m) {
			return fmt.Errorf("vm: the module imports %s.%s, which this VM does not provide", m, name)
		}
		d, ok := have[m][name]
		if !ok {
			return fmt.Errorf("vm: the module imports %s.%s, which the %s module does not have (docs/VM-ABI.md)", m, name, m)
		}
		if !slices.Equal(d.ParamTypes(), f.ParamTypes()) || !slices.Equal(d.ResultTypes(), f.ResultTypes()) {
			return fmt.Errorf("vm: the module imports %s.%s with another signature than the VM's (docs/VM-ABI.md)", m, name)
		}
	}
	return nil
}

// exitOf classifies how the guest ended.
func exitOf(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var ee *sys.ExitError
	if errors.As(err, &ee) {
		switch ee.ExitCode() {
		case 0:
			return nil
		case sys.ExitCodeDeadlineExceeded:
			return &ExitError{Code: ee.ExitCode(), Reason: "timeout", Err: err}
		case sys.ExitCodeContextCanceled:
			return &ExitError{Code: ee.ExitCode(), Reason: "canceled", Err: err}
		}
		return &ExitError{Code: ee.ExitCode(), Reason: "exit", Err: err}
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &ExitError{Reason: "timeout", Err: err}
	case ctx.Err() != nil:
		return &ExitError{Reason: "canceled", Err: err}
	}
	// A trap: unreachable, out of bounds, out of memory (memory.grow
	// refused past the cap makes the guest's runtime abort).
	return &ExitError{Code: 1, Reason: "trap", Err: err}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

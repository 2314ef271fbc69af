package system

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/integrity-sys/integrity/chainfs/blob"
	"github.com/integrity-sys/integrity/chainfs/image"
	"github.com/integrity-sys/integrity/chainfs/imageserver"
	"github.com/integrity-sys/integrity/keyring"
	"github.com/integrity-sys/integrity/vm"
	"github.com/integrity-sys/integrity/vm/hostdev"
)

// The System VM runs here, in the Client — the agent when one runs, else
// the command's own process, which then holds the keys itself — never in
// a process of its own: the identity device signs with keys only the
// Client holds, and the console travels over the same socket as every
// other call (docs/VM-ABI.md, "Where the VM runs").
//
// A boot is a session: vm.boot starts the machine and returns its id; the
// CLI pushes stdin with vm.write and long-polls stdout, stderr, password
// prompts and the exit status with vm.read; vm.unlock answers a prompt;
// vm.kill stops the machine. A session nobody polls for sessionIdle is
// stopped (its CLI is gone).

// Limits of the VM's sessions.
const (
	maxModule   = 128 << 20 // an OS image read from a file
	consoleMax  = 1 << 20   // buffered per stream before the writer waits
	readMax     = 1 << 20   // returned by one vm.read
	maxReadWait = 10 * time.Second
	sessionIdle = time.Minute
	promptWait  = 2 * time.Minute
	maxAttempts = 3
	// maxSessions × the VM's memory cap (256 MiB) bounds what guests
	// can take of the agent: 2 GiB.
	maxSessions = 8
)

// Approvable are the kinds of guest operations a boot may approve in
// advance (--allow) for a script; on a terminal the user is asked each
// time instead.
var Approvable = []string{"share", "publish", "image"}

// ErrNoSession: the session ended or never existed.
var ErrNoSession = errors.New("no such VM session (it ended)")

// vmService is the VM's state in this System: its runtime and sessions.
type vmService struct {
	s *System

	mu       sync.Mutex
	rt       *vm.Runtime
	sessions map[string]*vmSession
	running  sync.WaitGroup // machines still inside Boot
}

func (s *System) vmHandlers() map[string]func(context.Context, json.RawMessage) (any, error) {
	v := &vmService{s: s, sessions: map[string]*vmSession{}}
	s.mu.Lock()
	s.vm = v
	s.mu.Unlock()
	return map[string]func(context.Context, json.RawMessage) (any, error){
		"vm.boot":    typed(v.boot),
		"vm.read":    typed(v.read),
		"vm.write":   typed(v.write),
		"vm.unlock":  typed(v.unlock),
		"vm.kill":    typed(v.kill),
		"vm.install": typed(v.install),
	}
}

// close stops every machine and closes the runtime: before the tree
// closes, so no guest writes to a closed tree.
func (v *vmService) close(ctx context.Context) error {
	v.mu.Lock()
	for _, ss := range v.sessions {
		ss.cancel()
	}
	rt := v.rt
	v.rt = nil
	v.mu.Unlock()
	// Wait for the machines to leave their host calls and flush their
	// files before the tree and the identity close under them.
	stopped := make(chan struct{})
	go func() { v.running.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		return fmt.Errorf("stop the VM sessions: %w", ctx.Err())
	}
	if rt == nil {
		return nil
	}
	return rt.Close(ctx)
}

// runtime opens the VM runtime on first use; compiled code is cached in
// the data directory.
func (v *vmService) runtime() (*vm.Runtime, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.rt != nil {
		return v.rt, nil
	}
	rt, err := vm.New(vm.Options{CacheDir: filepath.Join(v.s.opts.Dir.Path, "vm-cache"), Logger: v.s.log})
	if err != nil {
		return nil, err
	}
	v.rt = rt
	return rt, nil
}

// readModule reads an OS image from a file of this machine.
func readModule(path string) ([]byte, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%s: give an absolute path (the agent has its own working directory)", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read OS image: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxModule+1))
	if err != nil {
		return nil, fmt.Errorf("read OS image: %w", err)
	}
	if len(b) > maxModule {
		return nil, fmt.Errorf("%s: larger than %d MiB", path, maxModule>>20)
	}
	return b, nil
}

// InstallArgs are vm.install's arguments.
type InstallArgs struct {
	Path string `json:"path"` // a .wasm file on this machine
}

// InstallResult answers vm.install.
type InstallResult struct {
	Bytes  int    `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// install makes a module the System's bootloader, after checking the VM
// can boot it.
func (v *vmService) install(ctx context.Context, a InstallArgs) (any, error) {
	wasm, err := readModule(a.Path)
	if err != nil {
		return nil, err
	}
	rt, err := v.runtime()
	if err != nil {
		return nil, err
	}
	if err := rt.Check(ctx, wasm); err != nil {
		return nil, fmt.Errorf("%s: %w", a.Path, err)
	}
	t, err := v.s.Tree(ctx)
	if err != nil {
		return nil, err
	}
	if err := t.SetBootloader(ctx, wasm); err != nil {
		return nil, fmt.Errorf("install the bootloader: %w", err)
	}
	sum := sha256.Sum256(wasm)
	return InstallResult{Bytes: len(wasm), SHA256: hex.EncodeToString(sum[:])}, nil
}

// BootArgs are vm.boot's arguments.
type BootArgs struct {
	// OS is a .wasm file on this machine to boot instead of the installed
	// bootloader.
	OS   string   `json:"os,omitempty"`
	Args []string `json:"args,omitempty"`
	// Interactive: the CLI can answer password prompts (a terminal, or a
	// password file). Otherwise privileged operations fail as locked
	// unless the key was unlocked (`integrity unlock`).
	Interactive bool `json:"interactive,omitempty"`
	// TTY: the console is a terminal (the guest may show a prompt).
	TTY     bool          `json:"tty,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
	// Allow approves these kinds of operations (Approvable) for the whole
	// session, for scripts; the password is still needed.
	Allow []string `json:"allow,omitempty"`
}

// BootResult answers vm.boot.
type BootResult struct {
	Session string `json:"session"`
}

func (v *vmService) boot(ctx context.Context, a BootArgs) (any, error) {
	var wasm []byte
	var err error
	t, err := v.s.Tree(ctx)
	if err != nil {
		return nil, err
	}
	if a.OS != "" {
		wasm, err = readModule(a.OS)
	} else {
		wasm, err = t.Bootloader(ctx)
		if err != nil {
			err = fmt.Errorf("no OS installed (`integrity os install`, or boot one with --os FILE): %w", err)
		}
	}
	if err != nil {
		return nil, err
	}
	allowed := map[string]bool{}
	for _, k := range a.Allow {
		if !slices.Contains(Approvable, k) {
			return nil, fmt.Errorf("--allow %q: the OS's operations to approve are %s", k, strings.Join(Approvable, ", "))
		}
		allowed[k] = true
	}
	rt, err := v.runtime()
	if err != nil {
		return nil, err
	}
	idb := make([]byte, 16)
	if _, err := rand.Read(idb); err != nil {
		return nil, err
	}
	// The machine outlives this request; vm.kill or idleness stops it.
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ss := &vmSession{id: hex.EncodeToString(idb), s: v.s, interactive: a.Interactive, tty: a.TTY,
		allowed: allowed, cancel: cancel, changed: make(chan struct{}), lastPoll: time.Now()}
	v.mu.Lock()
	if len(v.sessions) >= maxSessions {
		v.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("%d VM sessions are running: stop one first", maxSessions)
	}
	v.sessions[ss.id] = ss
	v.running.Add(1)
	v.mu.Unlock()

	v.s.mu.Lock()
	user := v.s.opts.Settings.User
	v.s.mu.Unlock()
	env := []string{"HOME=/", "PWD=/", "USER=" + user}
	if a.TTY {
		env = append(env, "INTEGRITY_TTY=1")
	}
	m := vm.Machine{
		Module: wasm, Args: append([]string{"os"}, a.Args...), Env: env,
		Stdin: sessionStdin{ss}, Stdout: sessionOut{ss, false}, Stderr: sessionOut{ss, true},
		Disk:     hostdev.Tree{T: t},
		Chain:    hostdev.Chain{Backend: v.s.backend},
		Sharing:  vmSharing{v.s},
		Identity: &hostdev.Identity{Get: v.s.vmIdentity, User: user, Params: v.s.backend.Params()},
		Unlocker: ss,
		Network:  &hostdev.Network{},
		Timeout:  a.Timeout,
	}
	// A guest blocked on its console inside a host call does not see the
	// context: wake it.
	context.AfterFunc(mctx, func() {
		ss.mu.Lock()
		ss.stopped = true
		ss.signal()
		ss.mu.Unlock()
	})
	go func() {
		defer v.running.Done()
		err := rt.Boot(mctx, m)
		v.s.log.Info("vm: session ended", "session", ss.id, "err", err)
		ss.finish(err)
		cancel()
	}()
	go v.reap(mctx, ss)
	return BootResult{Session: ss.id}, nil
}

// reap stops a session nobody polls and forgets it once it ended and its
// output was read (or nobody came for it).
func (v *vmService) reap(ctx context.Context, ss *vmSession) {
	tick := time.NewTicker(sessionIdle / 4)
	defer tick.Stop()
	for range tick.C {
		ss.mu.Lock()
		idle := time.Since(ss.lastPoll) > sessionIdle
		over := ss.done && (ss.collected || idle)
		ss.mu.Unlock()
		if idle && ctx.Err() == nil {
			v.s.log.Warn("vm: session abandoned by its console; stopping it", "session", ss.id)
			ss.cancel()
		}
		if over {
			v.mu.Lock()
			delete(v.sessions, ss.id)
			v.mu.Unlock()
			return
		}
	}
}

func (v *vmService) session(id string) (*vmSession, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	ss, ok := v.sessions[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoSession, id)
	}
	return ss, nil
}

// ReadArgs are vm.read's arguments.
type ReadArgs struct {
	Session string        `json:"session"`
	Wait    time.Duration `json:"wait,omitempty"` // long-poll up to this long
}

// ReadResult answers vm.read: console output since the last read, a
// pending password prompt, and the end of the session.
type ReadResult struct {
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
	// Prompt is a question for the user: what the guest asks to do
	// (PromptID changes with every new question). PromptKind says what
	// answers it: PromptPassword (the password, to unlock the privileged
	// key) or PromptApprove (yes or no to this one operation).
	Prompt     string `json:"prompt,omitempty"`
	PromptID   int    `json:"prompt_id,omitempty"`
	PromptKind string `json:"prompt_kind,omitempty"`
	// Done: the guest ended and all its output was returned.
	Done     bool   `json:"done,omitempty"`
	ExitCode int    `json:"exit_code,omitempty"`
	Error    string `json:"error,omitempty"` // how it ended, if not with status 0
}

func (v *vmService) read(ctx context.Context, a ReadArgs) (any, error) {
	ss, err := v.session(a.Session)
	if err != nil {
		return nil, err
	}
	wait := min(max(a.Wait, 0), maxReadWait)
	ss.mu.Lock()
	ss.lastPoll = time.Now()
	ss.mu.Unlock()
	ss.waitFor(ctx, wait, func() bool {
		return ss.stdout.Len() > 0 || ss.stderr.Len() > 0 || ss.done || (ss.prompt != nil && !ss.prompt.shown)
	})
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.lastPoll = time.Now()
	var r ReadResult
	r.Stdout = take(&ss.stdout.buf, readMax)
	r.Stderr = take(&ss.stderr.buf, readMax)
	if p := ss.prompt; p != nil {
		p.shown = true
		r.Prompt, r.PromptID, r.PromptKind = p.reason, p.id, p.kind
	}
	if ss.done && ss.stdout.Len() == 0 && ss.stderr.Len() == 0 {
		r.Done, r.ExitCode = true, ss.exitCode
		if ss.result != nil {
			r.Error = ss.result.Error()
		}
		ss.collected = true
	}
	ss.signal() // writers waiting for room
	return r, nil
}

func take(b *[]byte, n int) []byte {
	if len(*b) == 0 {
		return nil
	}
	n = min(n, len(*b))
	out := append([]byte(nil), (*b)[:n]...)
	*b = append((*b)[:0], (*b)[n:]...)
	return out
}

// WriteArgs are vm.write's arguments.
type WriteArgs struct {
	Session string `json:"session"`
	Data    []byte `json:"data,omitempty"`
	EOF     bool   `json:"eof,omitempty"` // the console's input ended
}

func (v *vmService) write(ctx context.Context, a WriteArgs) (any, error) {
	ss, err := v.session(a.Session)
	if err != nil {
		return nil, err
	}
	data := a.Data
	for len(data) > 0 {
		ok := ss.waitFor(ctx, maxReadWait, func() bool { return ss.done || ss.stdin.Len() < consoleMax })
		ss.mu.Lock()
		ss.lastPoll = time.Now()
		if ss.done {
			ss.mu.Unlock()
			return struct{}{}, nil // the guest is gone: its input goes nowhere
		}
		if !ok {
			ss.mu.Unlock()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue
		}
		n := min(len(data), consoleMax-ss.stdin.Len())
		ss.stdin.buf = append(ss.stdin.buf, data[:n]...)
		data = data[n:]
		ss.signal()
		ss.mu.Unlock()
	}
	if a.EOF {
		ss.mu.Lock()
		ss.stdinEOF = true
		ss.signal()
		ss.mu.Unlock()
	}
	return struct{}{}, nil
}

// Kinds of prompts.
const (
	PromptPassword = "password"
	PromptApprove  = "approve"
)

// UnlockPromptArgs answer a session's prompt (vm.unlock): a password
// prompt with Password, an approval prompt with Approve; Decline refuses
// either.
type UnlockPromptArgs struct {
	Session  string `json:"session"`
	PromptID int    `json:"prompt_id"`
	Password []byte `json:"password,omitempty"`
	Approve  bool   `json:"approve,omitempty"`
	Decline  bool   `json:"decline,omitempty"`
}

func (v *vmService) unlock(_ context.Context, a UnlockPromptArgs) (any, error) {
	defer keyring.Wipe(a.Password)
	ss, err := v.session(a.Session)
	if err != nil {
		return nil, err
	}
	ss.mu.Lock()
	p := ss.prompt
	ss.mu.Unlock()
	if p == nil || p.id != a.PromptID {
		return nil, errors.New("no such password prompt (it was answered or timed out)")
	}
	if p.kind == PromptApprove {
		if a.Approve && !a.Decline {
			p.answer(nil)
		} else {
			p.answer(fmt.Errorf("%w: the user said no", vm.ErrNotApproved))
		}
		return struct{}{}, nil
	}
	if a.Decline {
		p.answer(vm.ErrPrivLocked)
		return struct{}{}, nil
	}
	id, err := v.s.vmIdentity()
	if err != nil {
		p.answer(err)
		return nil, err
	}
	if err := id.UnlockPrivileged(a.Password); err != nil {
		ss.mu.Lock()
		p.attempts++
		last := p.attempts >= maxAttempts
		if !last {
			// Ask again: a new prompt id, shown at the next read.
			ss.promptSeq++
			p.id, p.shown = ss.promptSeq, false
			ss.signal()
		}
		ss.mu.Unlock()
		if last {
			p.answer(vm.ErrPrivLocked)
		}
		return nil, err
	}
	p.answer(nil)
	return struct{}{}, nil
}

// KillArgs name a session (vm.kill).
type KillArgs struct {
	Session string `json:"session"`
}

func (v *vmService) kill(_ context.Context, a KillArgs) (any, error) {
	ss, err := v.session(a.Session)
	if err != nil {
		return nil, err
	}
	ss.cancel()
	return struct{}{}, nil
}

// vmIdentity is the logged-in identity, for the identity device.
func (s *System) vmIdentity() (*keyring.Identity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id == nil {
		return nil, fmt.Errorf("%w: %v", vm.ErrForbidden, ErrNotLoggedIn)
	}
	return s.id, nil
}

// vmSharing is the filesystem module's sharing and images, done by the
// System exactly as `integrity share` and `integrity publish` do them.
type vmSharing struct{ s *System }

func sharingErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrUnknownRecipient):
		return fmt.Errorf("%w: %v", vm.ErrBadInput, err)
	case errors.Is(err, image.ErrKeys):
		// A private image opens only at the folder it was packed for.
		return fmt.Errorf("%w: %v", vm.ErrForbidden, err)
	case errors.Is(err, syscall.ENOTEMPTY), errors.Is(err, syscall.EBUSY):
		return fmt.Errorf("%w: %v", vm.ErrAlready, err)
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.EINVAL):
		return fmt.Errorf("%w: %v", vm.ErrNoSuch, err)
	case errors.Is(err, imageserver.ErrUnavailable), errors.Is(err, blob.ErrNotFound):
		return fmt.Errorf("%w: %v", vm.ErrOffline, err)
	}
	return err
}

func (v vmSharing) Publish(ctx context.Context, path string, write bool) error {
	_, err := v.s.sharePublish(ctx, ShareArgs{Path: path, Write: write})
	return sharingErr(err)
}

func (v vmSharing) Share(ctx context.Context, path, to string, write bool) error {
	_, err := v.s.shareShare(ctx, ShareArgs{Path: path, To: to, Write: write})
	return sharingErr(err)
}

// CreateImage packs a folder of the tree into an image on the System's
// image servers, which the folder then shows (docs/VM-ABI.md).
func (v vmSharing) CreateImage(ctx context.Context, path string, public bool) (string, error) {
	res, err := v.s.imageFromFolder(ctx, ImageArgs{Path: path, Public: public})
	if err != nil {
		return "", sharingErr(err)
	}
	return res.Ref, nil
}

func (v vmSharing) MountImage(ctx context.Context, image, path string) error {
	_, err := v.s.imageMount(ctx, ImageArgs{Image: image, Path: path})
	return sharingErr(err)
}

func (v vmSharing) UnmountImage(ctx context.Context, path string) error {
	_, err := v.s.imageUnmount(ctx, ImageArgs{Path: path})
	return sharingErr(err)
}

// vmSession is one running machine and its console.
type vmSession struct {
	id          string
	s           *System
	interactive bool // password prompts can be answered (terminal or password file)
	tty         bool // a person at a terminal can answer approval prompts
	allowed     map[string]bool
	cancel      context.CancelFunc

	mu sync.Mutex
	// changed is closed (and replaced) at every change of the session.
	changed        chan struct{}
	stdin          console
	stdinEOF       bool
	stdout, stderr console
	prompt         *prompt
	promptSeq      int
	lastPoll       time.Time
	stopped        bool // killed: console reads and writes give up
	done           bool
	collected      bool
	exitCode       int
	result         error
}

type console struct{ buf []byte }

func (c *console) Len() int { return len(c.buf) }

// prompt is a pending question for the user.
type prompt struct {
	kind     string // PromptPassword or PromptApprove
	reason   string
	id       int
	shown    bool
	attempts int
	once     sync.Once
	ch       chan error
}

func (p *prompt) answer(err error) { p.once.Do(func() { p.ch <- err }) }

// signal wakes everyone waiting on the session (ss.mu held).
func (ss *vmSession) signal() {
	close(ss.changed)
	ss.changed = make(chan struct{})
}

// waitFor waits until cond holds (checked with ss.mu held), ctx ends or
// wait passes; it reports whether cond held.
func (ss *vmSession) waitFor(ctx context.Context, wait time.Duration, cond func() bool) bool {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		ss.mu.Lock()
		if cond() {
			ss.mu.Unlock()
			return true
		}
		ch := ss.changed
		ss.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		case <-timer.C:
			return false
		}
	}
}

func (ss *vmSession) finish(err error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.done, ss.result = true, err
	var ee *vm.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Reason == "exit":
		ss.exitCode = int(ee.Code)
	default:
		ss.exitCode = 1
	}
	if ss.prompt != nil {
		ss.prompt.answer(context.Canceled)
	}
	ss.signal()
}

// sessionStdin is the guest's stdin: what vm.write delivered.
type sessionStdin struct{ ss *vmSession }

func (r sessionStdin) Read(p []byte) (int, error) {
	ss := r.ss
	for {
		ss.mu.Lock()
		if n := copy(p, ss.stdin.buf); n > 0 {
			ss.stdin.buf = append(ss.stdin.buf[:0], ss.stdin.buf[n:]...)
			ss.signal()
			ss.mu.Unlock()
			return n, nil
		}
		if ss.stdinEOF || ss.done || ss.stopped {
			ss.mu.Unlock()
			return 0, io.EOF
		}
		ch := ss.changed
		ss.mu.Unlock()
		<-ch // finish and every write signal
	}
}

// sessionOut is the guest's stdout or stderr, buffered until vm.read; a
// guest that writes faster than its console reads waits.
type sessionOut struct {
	ss     *vmSession
	stderr bool
}

func (w sessionOut) Write(p []byte) (int, error) {
	ss := w.ss
	done := 0
	for done < len(p) {
		ss.mu.Lock()
		c := &ss.stdout
		if w.stderr {
			c = &ss.stderr
		}
		if room := consoleMax - c.Len(); room > 0 {
			n := min(room, len(p)-done)
			c.buf = append(c.buf, p[done:done+n]...)
			done += n
			ss.signal()
			ss.mu.Unlock()
			continue
		}
		if ss.done || ss.stopped {
			ss.mu.Unlock()
			return done, io.ErrClosedPipe
		}
		ch := ss.changed
		ss.mu.Unlock()
		<-ch
	}
	return done, nil
}

// Unlock implements vm.Unlocker: nothing to do while the privileged key is
// unlocked (it stays so for keyring.PrivilegedTTL after the password was
// typed, which is how the user is asked at most every 5 minutes);
// otherwise the session's console asks the user, if it can.
func (ss *vmSession) Unlock(ctx context.Context, reason string) error {
	id, err := ss.s.vmIdentity()
	if err != nil {
		return err
	}
	if _, _, err := id.Privileged(time.Now()); err == nil {
		return nil
	}
	if !ss.interactive {
		return fmt.Errorf("%w: no terminal to ask for the password (run `integrity unlock` first)", vm.ErrPrivLocked)
	}
	return ss.ask(ctx, PromptPassword, reason)
}

// Approve implements vm.Unlocker: the user allows this one operation —
// at the terminal each time, or for the whole session with boot --allow
// — and the privileged key is unlocked.
func (ss *vmSession) Approve(ctx context.Context, kind, reason string) error {
	if !ss.allowed[kind] {
		if !ss.tty {
			err := fmt.Errorf("%w: the OS asked to %s, and nobody is at a terminal to ask (to allow it in a script: integrity boot --allow %s)",
				vm.ErrNotApproved, reason, kind)
			ss.notice("[integrity] refused: " + err.Error())
			return err
		}
		if err := ss.ask(ctx, PromptApprove, reason); err != nil {
			return err
		}
	}
	return ss.Unlock(ctx, reason)
}

// notice tells the user something on the console's stderr, between the
// guest's own lines.
func (ss *vmSession) notice(msg string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.stderr.Len() < consoleMax {
		ss.stderr.buf = append(ss.stderr.buf, "\n"+msg+"\n"...)
		ss.signal()
	}
}

// ask puts a question to the console and waits for its answer.
func (ss *vmSession) ask(ctx context.Context, kind, reason string) error {
	ss.mu.Lock()
	if ss.prompt != nil || ss.done {
		ss.mu.Unlock()
		return fmt.Errorf("%w: another prompt is pending", vm.ErrPrivLocked)
	}
	ss.promptSeq++
	p := &prompt{kind: kind, reason: reason, id: ss.promptSeq, ch: make(chan error, 1)}
	ss.prompt = p
	ss.signal()
	ss.mu.Unlock()
	defer func() {
		ss.mu.Lock()
		ss.prompt = nil
		ss.signal()
		ss.mu.Unlock()
	}()
	timer := time.NewTimer(promptWait)
	defer timer.Stop()
	select {
	case err := <-p.ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		if kind == PromptApprove {
			return fmt.Errorf("%w: nobody answered", vm.ErrNotApproved)
		}
		return fmt.Errorf("%w: nobody answered the password prompt", vm.ErrPrivLocked)
	}
}

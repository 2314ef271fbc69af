package secretserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Sender delivers a one-time code to a destination (an e-mail address, a
// phone number: whatever the operator's channel understands). The server
// validates destinations (printable ASCII, no spaces, not starting with
// '-') before a Sender sees them. Send must honour ctx.
type Sender interface {
	Send(ctx context.Context, destination, code string) error
}

// CommandSender runs an operator-configured program for every code, e.g. a
// script that calls an SMS or mail gateway. The program is executed
// directly (no shell), with the destination and code passed
//
//   - in the environment, as INTEGRITY_CODE_DESTINATION and INTEGRITY_CODE,
//     and
//   - on standard input, as one line "destination code\n",
//
// never on the command line, where any local user could read them in the
// process list, and never through a shell string built from user input.
// A non-zero exit status is a failed send; the first 4 KiB of standard
// error are quoted in the error.
type CommandSender struct {
	// Path is the program to run (absolute, or looked up in PATH).
	Path string
	// Args are fixed arguments chosen by the operator.
	Args []string
	// Env is extra environment (KEY=value) for the program; PATH is passed
	// through from the server's environment, nothing else is.
	Env []string
	// Timeout bounds one run; 0 means 30 seconds.
	Timeout time.Duration
}

// Send implements Sender.
func (c *CommandSender) Send(ctx context.Context, destination, code string) error {
	if c.Path == "" {
		return errors.New("command sender: no program configured")
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Path, c.Args...)
	env := []string{"INTEGRITY_CODE_DESTINATION=" + destination, "INTEGRITY_CODE=" + code}
	if p, ok := os.LookupEnv("PATH"); ok {
		env = append(env, "PATH="+p)
	}
	cmd.Env = append(env, c.Env...)
	cmd.Stdin = strings.NewReader(destination + " " + code + "\n")
	var stderr limitedBuffer
	stderr.max = 4 << 10
	cmd.Stderr = &stderr
	// Do not wait forever for grandchildren holding stderr open.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("command sender %s: %w (after %s)", c.Path, ctx.Err(), timeout)
		}
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			return fmt.Errorf("command sender %s: %w: %s", c.Path, err, msg)
		}
		return fmt.Errorf("command sender %s: %w", c.Path, err)
	}
	return nil
}

type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		if len(p) > room {
			b.Buffer.Write(p[:room])
		} else {
			b.Buffer.Write(p)
		}
	}
	return len(p), nil
}

// FileSender appends "destination code" lines to a file (mode 0600). It is
// for development and tests: a person or a test reads the code from the
// file instead of a phone.
type FileSender struct {
	Path string
	mu   sync.Mutex
}

// NewFileSender returns a FileSender writing to path.
func NewFileSender(path string) *FileSender {
	return &FileSender{Path: path}
}

// Send implements Sender.
func (f *FileSender) Send(ctx context.Context, destination, code string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fh, err := os.OpenFile(f.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("file sender: %w", err)
	}
	_, werr := fmt.Fprintf(fh, "%s %s\n", destination, code)
	cerr := fh.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("file sender: %w", err)
	}
	return nil
}

//go:build wasip1

// Command os is the sample operating system of the System VM: a small shell
// that reads commands from stdin and works on the user's tree (the VM's
// disk, through WASI) and the VM's virtual hardware (package vm/guest).
// `integrity os install` makes it the bootloader; `integrity boot` runs it.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -o bin/os.wasm ./vm/os
package main

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/integrity-sys/integrity/vm/guest"
)

func main() {
	sh := &shell{in: bufio.NewReader(os.Stdin), out: os.Stdout, errOut: os.Stderr, cwd: "/",
		prompt: os.Getenv("INTEGRITY_TTY") != ""}
	os.Exit(sh.run())
}

type shell struct {
	in          *bufio.Reader
	out, errOut io.Writer
	cwd         string
	prompt      bool
	status      int // of the last command
}

// command is one built-in: args exclude the command's name.
type command struct {
	usage string
	help  string
	run   func(sh *shell, args []string) error
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"help":    {"help", "list the commands", (*shell).help},
		"ls":      {"ls [PATH]", "list a folder", (*shell).ls},
		"cat":     {"cat PATH...", "print files", (*shell).cat},
		"write":   {"write PATH TEXT...", "write TEXT and a newline to a file (replacing it)", (*shell).write},
		"mkdir":   {"mkdir [-p] PATH...", "make folders", (*shell).mkdir},
		"rm":      {"rm [-r] PATH...", "remove files (and folders with -r)", (*shell).rm},
		"mv":      {"mv FROM TO", "move or rename", (*shell).mv},
		"cd":      {"cd [PATH]", "change the current folder", (*shell).cd},
		"pwd":     {"pwd", "print the current folder", (*shell).pwd},
		"share":   {"share PATH RECIPIENT [--write]", "share a folder with a user (public key or contact)", (*shell).share},
		"publish": {"publish PATH [--write]", "make a folder public", (*shell).publish},
		"image":   {"image create PATH [--public] | mount IMAGE PATH | unmount PATH", "mountable images on your image servers", (*shell).image},
		"sign":    {"sign [--privileged] MESSAGE...", "sign a message with your key pair (hex DER)", (*shell).sign},
		"verify":  {"verify PUBKEY SIGNATURE MESSAGE...", "check a signature (hex arguments)", (*shell).verify},
		"whoami":  {"whoami", "who you are: user and public keys", (*shell).whoami},
		"resolve": {"resolve NAME", "look a name up (DNS, then the Domain System)", (*shell).resolve},
		"balance": {"balance [ADDRESS]", "an address's balance (default: your root folder's)", (*shell).balance},
		"exit":    {"exit [STATUS]", "leave the shell", nil},
	}
}

// run reads and runs commands until exit or the end of input.
func (sh *shell) run() int {
	for {
		if sh.prompt {
			fmt.Fprintf(sh.out, "integrity:%s$ ", sh.cwd)
		}
		line, err := sh.in.ReadString('\n')
		if line == "" && err != nil {
			if !errors.Is(err, io.EOF) {
				fmt.Fprintln(sh.errOut, "os: read:", err)
				return 1
			}
			return sh.status
		}
		args, perr := split(strings.TrimRight(line, "\r\n"))
		if perr != nil {
			fmt.Fprintln(sh.errOut, "os:", perr)
			sh.status = 2
			continue
		}
		if len(args) == 0 || strings.HasPrefix(args[0], "#") {
			continue
		}
		if args[0] == "exit" {
			if len(args) > 1 {
				n, err := strconv.Atoi(args[1])
				if err != nil {
					fmt.Fprintln(sh.errOut, "exit: status must be a number")
					return 2
				}
				return n
			}
			return sh.status
		}
		c, ok := commands[args[0]]
		if !ok {
			fmt.Fprintf(sh.errOut, "%s: unknown command (try help)\n", args[0])
			sh.status = 127
			continue
		}
		if err := c.run(sh, args[1:]); err != nil {
			fmt.Fprintf(sh.errOut, "%s: %v\n", args[0], err)
			sh.status = 1
			continue
		}
		sh.status = 0
	}
}

// split breaks a line into words; double or single quotes group words.
func split(line string) ([]string, error) {
	var out []string
	var cur strings.Builder
	in, quote := false, rune(0)
	for _, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote")
	}
	if in {
		out = append(out, cur.String())
	}
	return out, nil
}

// abs makes a path absolute against the current folder.
func (sh *shell) abs(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = sh.cwd + "/" + p
	}
	return path.Clean(p)
}

// flags separates --flags and -f flags from operands.
func flags(args []string) (map[string]bool, []string) {
	set := map[string]bool{}
	var rest []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			set[strings.TrimLeft(a, "-")] = true
		} else {
			rest = append(rest, a)
		}
	}
	return set, rest
}

func need(args []string, n int, usage string) error {
	if len(args) < n {
		return fmt.Errorf("usage: %s", usage)
	}
	return nil
}

func (sh *shell) help([]string) error {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(sh.out, "  %-36s %s\n", commands[n].usage, commands[n].help)
	}
	return nil
}

func (sh *shell) ls(args []string) error {
	p := sh.cwd
	if len(args) > 0 {
		p = sh.abs(args[0])
	}
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		fmt.Fprintf(sh.out, "%s %10d %s\n", kind(fi.Mode()), fi.Size(), fi.Name())
		return nil
	}
	ents, err := os.ReadDir(p)
	if err != nil {
		return err
	}
	for _, e := range ents {
		var size int64
		if info, err := e.Info(); err == nil {
			size = info.Size()
		}
		fmt.Fprintf(sh.out, "%s %10d %s\n", kind(e.Type()), size, e.Name())
	}
	return nil
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "d"
	case m&fs.ModeSymlink != 0:
		return "l"
	}
	return "-"
}

func (sh *shell) cat(args []string) error {
	if err := need(args, 1, commands["cat"].usage); err != nil {
		return err
	}
	for _, a := range args {
		f, err := os.Open(sh.abs(a))
		if err != nil {
			return err
		}
		_, err = io.Copy(sh.out, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func (sh *shell) write(args []string) error {
	if err := need(args, 1, commands["write"].usage); err != nil {
		return err
	}
	// Closing the file is what makes it a commit.
	return os.WriteFile(sh.abs(args[0]), []byte(strings.Join(args[1:], " ")+"\n"), 0o644)
}

func (sh *shell) mkdir(args []string) error {
	fl, ops := flags(args)
	if err := need(ops, 1, commands["mkdir"].usage); err != nil {
		return err
	}
	for _, a := range ops {
		var err error
		if fl["p"] {
			err = os.MkdirAll(sh.abs(a), 0o755)
		} else {
			err = os.Mkdir(sh.abs(a), 0o755)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (sh *shell) rm(args []string) error {
	fl, ops := flags(args)
	if err := need(ops, 1, commands["rm"].usage); err != nil {
		return err
	}
	for _, a := range ops {
		p := sh.abs(a)
		if p == "/" {
			return errors.New("refusing to remove /")
		}
		var err error
		if fl["r"] {
			if _, err = os.Lstat(p); err == nil {
				err = os.RemoveAll(p)
			}
		} else {
			err = os.Remove(p)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (sh *shell) mv(args []string) error {
	if err := need(args, 2, commands["mv"].usage); err != nil {
		return err
	}
	from, to := sh.abs(args[0]), sh.abs(args[1])
	if fi, err := os.Stat(to); err == nil && fi.IsDir() {
		to = path.Join(to, path.Base(from))
	}
	return os.Rename(from, to)
}

func (sh *shell) cd(args []string) error {
	p := "/"
	if len(args) > 0 {
		p = sh.abs(args[0])
	}
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: not a folder", p)
	}
	sh.cwd = p
	return nil
}

func (sh *shell) pwd([]string) error {
	fmt.Fprintln(sh.out, sh.cwd)
	return nil
}

func (sh *shell) share(args []string) error {
	fl, ops := flags(args)
	if err := need(ops, 2, commands["share"].usage); err != nil {
		return err
	}
	if err := guest.Share(sh.abs(ops[0]), ops[1], fl["write"]); err != nil {
		return err
	}
	fmt.Fprintf(sh.out, "shared %s with %s\n", sh.abs(ops[0]), ops[1])
	return nil
}

func (sh *shell) publish(args []string) error {
	fl, ops := flags(args)
	if err := need(ops, 1, commands["publish"].usage); err != nil {
		return err
	}
	if err := guest.Publish(sh.abs(ops[0]), fl["write"]); err != nil {
		return err
	}
	fmt.Fprintf(sh.out, "published %s\n", sh.abs(ops[0]))
	return nil
}

func (sh *shell) image(args []string) error {
	fl, ops := flags(args)
	usage := commands["image"].usage
	if len(ops) == 0 {
		return fmt.Errorf("usage: %s", usage)
	}
	switch ops[0] {
	case "create":
		if err := need(ops[1:], 1, usage); err != nil {
			return err
		}
		ref, err := guest.CreateImage(sh.abs(ops[1]), fl["public"])
		if err != nil {
			return err
		}
		fmt.Fprintf(sh.out, "%s is now an image: %s\n", sh.abs(ops[1]), ref)
	case "mount":
		if err := need(ops[1:], 2, usage); err != nil {
			return err
		}
		if err := guest.MountImage(ops[1], sh.abs(ops[2])); err != nil {
			return err
		}
		fmt.Fprintf(sh.out, "mounted at %s\n", sh.abs(ops[2]))
	case "unmount":
		if err := need(ops[1:], 1, usage); err != nil {
			return err
		}
		if err := guest.UnmountImage(sh.abs(ops[1])); err != nil {
			return err
		}
		fmt.Fprintf(sh.out, "unmounted %s\n", sh.abs(ops[1]))
	default:
		return fmt.Errorf("usage: %s", usage)
	}
	return nil
}

func (sh *shell) sign(args []string) error {
	which := uint32(guest.PrimaryPair)
	if len(args) > 0 && args[0] == "--privileged" {
		which, args = guest.PrivilegedPair, args[1:]
	}
	if err := need(args, 1, commands["sign"].usage); err != nil {
		return err
	}
	sig, err := guest.Sign(which, []byte(strings.Join(args, " ")))
	if err != nil {
		return err
	}
	fmt.Fprintln(sh.out, hex.EncodeToString(sig))
	return nil
}

func (sh *shell) verify(args []string) error {
	if err := need(args, 3, commands["verify"].usage); err != nil {
		return err
	}
	pub, err := hex.DecodeString(args[0])
	if err != nil {
		return fmt.Errorf("public key: %w", err)
	}
	sig, err := hex.DecodeString(args[1])
	if err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	if err := guest.Verify(pub, []byte(strings.Join(args[2:], " ")), sig); err != nil {
		return err
	}
	fmt.Fprintln(sh.out, "ok")
	return nil
}

func (sh *shell) whoami([]string) error {
	id, err := guest.Info()
	if err != nil {
		return err
	}
	fmt.Fprintf(sh.out, "user:           %s\nprimary key:    %s\nprivileged key: %s\nroot address:   %s\nnetwork:        %s\n",
		id.User, id.PrimaryPubKey, id.PrivilegedPubKey, id.RootAddress, id.Network)
	return nil
}

func (sh *shell) resolve(args []string) error {
	if err := need(args, 1, commands["resolve"].usage); err != nil {
		return err
	}
	addrs, err := guest.Resolve(args[0])
	if err != nil {
		return err
	}
	for _, a := range addrs {
		fmt.Fprintln(sh.out, a)
	}
	return nil
}

func (sh *shell) balance(args []string) error {
	addr := ""
	if len(args) > 0 {
		addr = args[0]
	} else {
		id, err := guest.Info()
		if err != nil {
			return err
		}
		addr = id.RootAddress
	}
	c, u, err := guest.Balance(addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(sh.out, "%s: %d sat confirmed, %d sat unconfirmed\n", addr, c, u)
	return nil
}

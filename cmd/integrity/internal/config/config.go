// Package config knows the layout of a data directory — where one System
// (or one server) keeps its state on a device — and the settings remembered
// in it. Several data directories can live side by side on one machine.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// File names inside a data directory.
const (
	fileConfig = "config.json"
	dirChain   = "chain"
	fileSocket = "agent.sock"
	fileLog    = "agent.log"
	filePID    = "agent.pid"
	fileSeed   = "wallet.seed"
	dirCache   = "cache"
	dirBlobs   = "blobs"
	fileDevKey = "device.key"
	fileKeys   = "keys.sealed"
)

// ChainEmbedded is the value of Settings.Chain for the in-process chain.
const ChainEmbedded = "embedded"

// DefaultMineInterval is how often the embedded chain mines pending
// transactions into a block.
const DefaultMineInterval = 2 * time.Second

// Settings are remembered in config.json after first use.
type Settings struct {
	// Chain is "embedded" or a btcd:// URL.
	Chain string `json:"chain"`
	// MineInterval applies to the embedded chain.
	MineInterval Duration `json:"mine_interval,omitempty"`
	// FeeRate in sat/byte; 0 means the wallet default.
	FeeRate int64 `json:"fee_rate,omitempty"`
	// User is the id this System is enrolled under at its secret servers.
	User string `json:"user,omitempty"`
	// SecretServers are the base URLs holding the presentation key's
	// slices, in slice order.
	SecretServers []string `json:"secret_servers,omitempty"`
	// Device names this device in conflict copies (default: hostname).
	Device string `json:"device,omitempty"`
	// Contacts name other users' primary public keys (hex).
	Contacts map[string]string `json:"contacts,omitempty"`
	// Public are the published folders (addresses) this device opened.
	Public []string `json:"public,omitempty"`
	// ImageServers caches the System's default image servers (kept in
	// its tree) for the start of the next run.
	ImageServers []string `json:"image_servers,omitempty"`
}

// Duration is a time.Duration that reads and writes as "2s" in JSON.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// Dir is a data directory.
type Dir struct{ Path string }

// DefaultPath is $XDG_DATA_HOME/integrity, else ~/.local/share/integrity.
func DefaultPath() (string, error) {
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "integrity"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find home directory: %w", err)
	}
	return filepath.Join(home, ".local", "share", "integrity"), nil
}

// Ensure creates the directory, private to its owner.
func (d Dir) Ensure() error {
	if err := os.MkdirAll(d.Path, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	return nil
}

// Paths inside the directory.
func (d Dir) ChainDir() string  { return filepath.Join(d.Path, dirChain) }
func (d Dir) Socket() string    { return filepath.Join(d.Path, fileSocket) }
func (d Dir) LogFile() string   { return filepath.Join(d.Path, fileLog) }
func (d Dir) PIDFile() string   { return filepath.Join(d.Path, filePID) }
func (d Dir) SeedFile() string  { return filepath.Join(d.Path, fileSeed) }
func (d Dir) CacheDir() string  { return filepath.Join(d.Path, dirCache) }
func (d Dir) BlobDir() string   { return filepath.Join(d.Path, dirBlobs) }
func (d Dir) DeviceKey() string { return filepath.Join(d.Path, fileDevKey) }
func (d Dir) KeysFile() string  { return filepath.Join(d.Path, fileKeys) }

// ErrChainMismatch: the data directory already belongs to another chain.
var ErrChainMismatch = errors.New("data directory belongs to another chain")

// Load reads the settings; a missing file gives zero settings.
func (d Dir) Load() (Settings, error) {
	b, err := os.ReadFile(filepath.Join(d.Path, fileConfig))
	if errors.Is(err, os.ErrNotExist) {
		return Settings{}, nil
	}
	if err != nil {
		return Settings{}, fmt.Errorf("read settings: %w", err)
	}
	var s Settings
	if err := json.Unmarshal(b, &s); err != nil {
		return Settings{}, fmt.Errorf("settings in %s are corrupt: %w", filepath.Join(d.Path, fileConfig), err)
	}
	return s, nil
}

// Save writes the settings atomically.
func (d Dir) Save(s Settings) error {
	if err := d.Ensure(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode settings: %w", err)
	}
	return WriteFileAtomic(filepath.Join(d.Path, fileConfig), append(b, '\n'), 0o600)
}

// Resolve combines the remembered settings with a --chain flag: the first
// use takes the flag (or "embedded"); later uses must agree with it,
// because a System's state belongs to one chain. The caller saves the
// settings once the chain has opened, so a mistyped first --chain is not
// remembered.
func (d Dir) Resolve(chainFlag string) (s Settings, fresh bool, err error) {
	s, err = d.Load()
	if err != nil {
		return Settings{}, false, err
	}
	switch {
	case s.Chain == "":
		s.Chain = chainFlag
		if s.Chain == "" {
			s.Chain = ChainEmbedded
		}
		if s.MineInterval == 0 {
			s.MineInterval = Duration(DefaultMineInterval)
		}
		fresh = true
	case chainFlag != "" && chainFlag != s.Chain:
		return Settings{}, false, fmt.Errorf("%w: %s uses %s, not %s (use another --data-dir)", ErrChainMismatch, d.Path, Redact(s.Chain), Redact(chainFlag))
	}
	return s, fresh, nil
}

// WriteFileAtomic writes via a synced temporary file and rename, so a crash
// leaves either the old or the new content.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Redact hides the password of a chain URL for messages and logs.
func Redact(chainURL string) string {
	u, err := url.Parse(chainURL)
	if err != nil || u.User == nil {
		return chainURL
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

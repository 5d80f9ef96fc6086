// Command stargz-grpc is the reference lazy-pulling snapshotter that Strata's hello-bench
// and tests/stargz_lazy_interop.rs run side by side with `strata serve`:
// stargz-snapshotter 0.12's FUSE filesystem under its overlayfs-based remote snapshotter,
// served as a containerd snapshots.v1 proxy plugin on a unix socket, as upstream's
// containerd-stargz-grpc does.
//
// Debian 12 packages stargz-snapshotter's library (golang-github-containerd-stargz-snapshotter-dev)
// and ctr-remote, but not the daemon; and the library's service/ packages, which wire the
// daemon upstream, import the Kubernetes CRI API, which Debian does not package. So this
// file does that wiring itself, with upstream's defaults (prefetch and background fetch
// on, overlay opaque xattrs as upstream detects them, asynchronous snapshot removal).
// Registry credentials are not supported (the benchmarks' registries are anonymous).
//
// Flags (upstream's names):
//
//	-address SOCK     unix socket to serve on (a stale socket file is replaced)
//	-root DIR         state: DIR/stargz (FUSE layers, caches), DIR/snapshotter (overlay snapshots)
//	-config TOML      upstream's fs keys (prefetch_size, noprefetch, no_background_fetch,
//	                  [blob], [directory_cache], [fuse], ...) and
//	                  [[resolver.host."HOST".mirrors]] host / insecure / request_timeout_sec;
//	                  unknown keys are an error (a typo would otherwise measure the defaults)
//	-log-level LVL    trace|debug|info|warn|error (JSON lines on stderr, ns timestamps)
//	-print-config     print the decoded config (TOML, every key) and exit
//
// Built by ../build-stargz-grpc.sh in GOPATH mode against Debian's Go sources
// (GO111MODULE=off GOPATH=/usr/share/gocode): nothing is downloaded.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/overlay/overlayutils"
	stargzfs "github.com/containerd/stargz-snapshotter/fs"
	fsconfig "github.com/containerd/stargz-snapshotter/fs/config"
	"github.com/containerd/stargz-snapshotter/fs/layer"
	"github.com/containerd/stargz-snapshotter/fs/source"
	snbase "github.com/containerd/stargz-snapshotter/snapshot"
	retryablehttp "github.com/hashicorp/go-retryablehttp"
	"github.com/pelletier/go-toml"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
)

// Config is upstream's daemon config, less the keychain and CRI sections.
type Config struct {
	fsconfig.Config
	Resolver ResolverConfig `toml:"resolver"`
}

// ResolverConfig is upstream's [resolver] section: per registry host, mirrors tried in
// order before the host itself.
type ResolverConfig struct {
	Host map[string]struct {
		Mirrors []Mirror `toml:"mirrors"`
	} `toml:"host"`
}

// Mirror is one [[resolver.host."HOST".mirrors]] entry.
type Mirror struct {
	Host     string `toml:"host"`
	Insecure bool   `toml:"insecure"` // plain HTTP
	// 0: upstream's default of 30 s per request; < 0: no timeout.
	RequestTimeoutSec int `toml:"request_timeout_sec"`
}

const defaultRequestTimeout = 30 * time.Second

// loadConfig decodes the TOML file as upstream 0.12 does (pelletier/go-toml, whose
// `default` struct tags apply: [directory_cache] direct is true unless set), and strictly:
// an unknown key is an error. No file: the defaults.
func loadConfig(path string) (Config, error) {
	var cfg Config
	var r io.Reader = strings.NewReader("")
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return cfg, err
		}
		defer f.Close()
		r = f
	}
	if err := toml.NewDecoder(r).Strict(true).Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// registryHosts resolves an image reference's host to where its blobs are fetched from,
// with upstream's rules: the configured mirrors first, then the host itself; HTTPS unless
// the host is localhost or the mirror is marked insecure; a retrying HTTP client with a
// per-request timeout; anonymous (token) authorization only.
func registryHosts(cfg ResolverConfig) source.RegistryHosts {
	return func(ref reference.Spec) ([]docker.RegistryHost, error) {
		name := ref.Hostname()
		candidates := append(append([]Mirror(nil), cfg.Host[name].Mirrors...), Mirror{Host: name})
		hosts := make([]docker.RegistryHost, 0, len(candidates))
		for _, m := range candidates {
			retrying := retryablehttp.NewClient()
			retrying.Logger = nil // one log line per request otherwise
			client := retrying.StandardClient()
			switch {
			case m.RequestTimeoutSec == 0:
				client.Timeout = defaultRequestTimeout
			case m.RequestTimeoutSec > 0:
				client.Timeout = time.Duration(m.RequestTimeoutSec) * time.Second
			}
			host := docker.RegistryHost{
				Client:       client,
				Authorizer:   docker.NewDockerAuthorizer(docker.WithAuthClient(client)),
				Host:         m.Host,
				Scheme:       "https",
				Path:         "/v2",
				Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
			}
			if local, _ := docker.MatchLocalhost(host.Host); local || m.Insecure {
				host.Scheme = "http"
			}
			if host.Host == "docker.io" {
				host.Host = "registry-1.docker.io"
			}
			hosts = append(hosts, host)
		}
		return hosts, nil
	}
}

// newSnapshotter builds stargz's filesystem and remote snapshotter under root.
func newSnapshotter(ctx context.Context, root string, cfg Config) (snapshots.Snapshotter, error) {
	snapRoot := filepath.Join(root, "snapshotter")
	if err := os.MkdirAll(snapRoot, 0o700); err != nil {
		return nil, err
	}
	// Opaque directories are marked with trusted.* xattrs unless overlayfs needs user.*
	// (rootless), as upstream decides it.
	opaque := layer.OverlayOpaqueTrusted
	if user, err := overlayutils.NeedsUserXAttr(snapRoot); err != nil {
		log.G(ctx).WithError(err).Warn("cannot tell whether overlayfs needs userxattr; assuming not")
	} else if user {
		opaque = layer.OverlayOpaqueUser
	}
	fs, err := stargzfs.NewFilesystem(filepath.Join(root, "stargz"), cfg.Config,
		stargzfs.WithGetSources(source.FromDefaultLabels(registryHosts(cfg.Resolver))),
		stargzfs.WithOverlayOpaqueType(opaque))
	if err != nil {
		return nil, fmt.Errorf("stargz filesystem: %w", err)
	}
	sn, err := snbase.NewSnapshotter(ctx, snapRoot, fs, snbase.AsynchronousRemove)
	if err != nil {
		return nil, fmt.Errorf("remote snapshotter: %w", err)
	}
	return sn, nil
}

func listen(address string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(address), 0o700); err != nil {
		return nil, err
	}
	if err := os.Remove(address); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return net.Listen("unix", address)
}

func run() error {
	address := flag.String("address", "/run/strata-reference/stargz-grpc.sock", "unix socket to serve containerd's snapshots API on")
	root := flag.String("root", "/var/lib/strata-reference/stargz-grpc", "state directory (empty it for a cold start: stargz restores old layers)")
	configPath := flag.String("config", "", "TOML config (upstream's keys)")
	level := flag.String("log-level", "info", "trace|debug|info|warn|error")
	printConfig := flag.Bool("print-config", false, "print the decoded config (TOML, every key) and exit")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}

	lvl, err := logrus.ParseLevel(*level)
	if err != nil {
		return err
	}
	logrus.SetLevel(lvl)
	logrus.SetFormatter(&logrus.JSONFormatter{TimestampFormat: log.RFC3339NanoFixed})
	ctx, cancel := context.WithCancel(log.WithLogger(context.Background(), log.L))
	defer cancel()

	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	if *printConfig {
		return toml.NewEncoder(os.Stdout).Encode(cfg)
	}

	sn, err := newSnapshotter(ctx, *root, cfg)
	if err != nil {
		return err
	}
	// Closing the snapshotter unmounts every FUSE layer it mounted.
	defer func() {
		if err := sn.Close(); err != nil {
			log.G(ctx).WithError(err).Warn("closing the snapshotter")
		}
	}()

	l, err := listen(*address)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *address, err)
	}
	server := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(server, snapshotservice.FromSnapshotter(sn))
	served := make(chan error, 1)
	go func() { served <- server.Serve(l) }()
	log.G(ctx).WithField("address", *address).WithField("root", *root).Info("stargz-grpc serving")

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-signals:
		log.G(ctx).WithField("signal", s.String()).Info("stopping")
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	}
	// Let calls in flight finish, but not for long: containerd may hold a stream open.
	stopped := make(chan struct{})
	go func() { server.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		server.Stop()
	}
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "stargz-grpc: %v\n", err)
		os.Exit(1)
	}
}

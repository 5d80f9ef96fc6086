// Command containerd-testsuite runs containerd's own snapshotter testsuite
// (github.com/containerd/containerd/snapshots/testsuite) against `strata serve`,
// reached the way containerd reaches a proxy snapshotter plugin: containerd's
// proxy client (snapshots/proxy) over gRPC on a unix socket.
//
// Every subtest of the suite gets a fresh root; for each one this program starts
// its own `strata serve` with its state under that root and a socket beside it,
// and stops it with SIGTERM when the subtest ends. The cleanup fails the subtest
// if the daemon does not exit cleanly or leaves its socket behind.
//
// It is built and run by tests/containerd_testsuite.rs with
// GO111MODULE=off GOPATH=/usr/share/gocode (Debian's containerd 1.6 sources).
// Environment:
//
//	STRATA_BIN          the strata binary
//	STRATA_SNAPSHOTTER  the snapshotter name sent in every request (overlayfs, native, erofs)
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/defaults"
	"github.com/containerd/containerd/pkg/dialer"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

// How long the daemon may take to listen, and to exit after SIGTERM.
const (
	startTimeout = 20 * time.Second
	stopTimeout  = 10 * time.Second
)

func TestContainerdSnapshotterSuite(t *testing.T) {
	bin := os.Getenv("STRATA_BIN")
	name := os.Getenv("STRATA_SNAPSHOTTER")
	if bin == "" || name == "" {
		t.Fatal("STRATA_BIN and STRATA_SNAPSHOTTER must be set")
	}
	testsuite.SnapshotterSuite(t, "strata-"+name, func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		return startStrata(ctx, bin, name, root)
	})
}

// startStrata starts `strata serve` with its state in root/strata and its socket at
// root/s.sock, and connects containerd's proxy snapshotter to it.
func startStrata(ctx context.Context, bin, name, root string) (snapshots.Snapshotter, func() error, error) {
	socket := filepath.Join(root, "s.sock")
	logPath := filepath.Join(root, "strata.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "--root", filepath.Join(root, "strata"), "serve", "--socket", socket)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", bin, err)
	}
	// exited is closed when the daemon has been reaped; waitErr is its status then.
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	kill := func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	if err := waitForSocket(socket, exited, &waitErr); err != nil {
		kill()
		return nil, nil, fmt.Errorf("%w; daemon log:\n%s", err, readLog(logPath))
	}
	// Dialled as containerd 1.6 dials a proxy plugin (services/server's proxyClients):
	// a unix:// target, which gives the HTTP/2 :authority "localhost", and its dialer.
	dialCtx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	conn, err := grpc.DialContext(dialCtx, dialer.DialAddress(socket),
		grpc.WithInsecure(),
		grpc.WithBlock(),
		grpc.WithContextDialer(dialer.ContextDialer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(defaults.DefaultMaxRecvMsgSize)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(defaults.DefaultMaxSendMsgSize)),
	)
	if err != nil {
		kill()
		return nil, nil, fmt.Errorf("dial %s: %w", socket, err)
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), name)

	cleanup := func() error {
		connErr := conn.Close()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			kill()
			return fmt.Errorf("SIGTERM strata serve: %w", err)
		}
		select {
		case <-exited:
			if waitErr != nil {
				return fmt.Errorf("strata serve exited after SIGTERM with %v; log:\n%s", waitErr, readLog(logPath))
			}
		case <-time.After(stopTimeout):
			kill()
			return fmt.Errorf("strata serve ignored SIGTERM for %v; log:\n%s", stopTimeout, readLog(logPath))
		}
		if _, err := os.Lstat(socket); err == nil {
			return fmt.Errorf("strata serve left its socket %s behind", socket)
		}
		return connErr
	}
	return sn, cleanup, nil
}

// waitForSocket polls until socket accepts connections or the daemon exits.
func waitForSocket(socket string, exited <-chan struct{}, waitErr *error) error {
	deadline := time.Now().Add(startTimeout)
	for {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			err := *waitErr
			if err == nil {
				err = errors.New("exit status 0")
			}
			return fmt.Errorf("strata serve exited while starting: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("strata serve did not listen on %s within %v", socket, startTimeout)
		}
	}
}

func readLog(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return string(b)
}

package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/understudy/understudy/dispatch"
)

func TestTokenCommandUsesTheServersSecret(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("UNDERSTUDY_SECRET", "")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"token", "--role", "driver", "--sub", "d-42", "--ttl", "1h", "--data-dir", dir}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	// The first use generated a secret in the data dir; a server on that dir verifies the token.
	if b, err := os.ReadFile(filepath.Join(dir, secretFile)); err != nil || len(strings.TrimSpace(string(b))) != 64 {
		t.Fatalf("secret file: %q %v", b, err)
	}
	keys, err := loadKeys(Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	id, err := keys.Verify(strings.TrimSpace(out.String()))
	if err != nil || id != (dispatch.Identity{Subject: "d-42", Role: dispatch.RoleDriver}) {
		t.Fatalf("verify minted token: %+v %v", id, err)
	}
	// UNDERSTUDY_SECRET wins over the file, so that token no longer verifies.
	t.Setenv("UNDERSTUDY_SECRET", "a-shared-secret-of-enough-length")
	keys, err = loadKeys(Config{DataDir: dir, Secret: os.Getenv("UNDERSTUDY_SECRET")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Verify(strings.TrimSpace(out.String())); err == nil {
		t.Fatal("token signed with the file secret verified under UNDERSTUDY_SECRET")
	}
}

func TestTokenCommandErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"token", "--sub", "d-1"},
		{"token", "--role", "pilot", "--sub", "d-1"},
		{"token", "--role", "driver"},
		{"token", "--role", "driver", "--sub", "d-1", "--ttl", "-1h"},
	} {
		if err := run(context.Background(), append(args, "--data-dir", dir), io.Discard, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	t.Setenv("UNDERSTUDY_SECRET", "short")
	if err := run(context.Background(), []string{"token", "--role", "driver", "--sub", "d-1", "--data-dir", dir}, io.Discard, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "too short") {
		t.Errorf("short secret: %v", err)
	}
}

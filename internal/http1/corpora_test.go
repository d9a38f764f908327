package http1

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The public test corpora (aws/http-desync-guardian, nodejs/llhttp) are data
// kept beside the repository, not in it: <repo>/../shared/corpora. scripts/test
// exports their location as STRAIT_CORPORA.

// corporaDir returns the directory of one corpus (sub, e.g. "llhttp") inside
// the corpora directory. It is STRAIT_CORPORA when that is set, else
// ../shared/corpora relative to the module root (the directory holding
// go.mod, found by walking up from the package directory).
//
// When the corpus is missing the test fails under CI=true (CI must run the
// corpora, never silently pass without them) and is skipped elsewhere.
func corporaDir(t testing.TB, sub string) string {
	t.Helper()
	base, how := os.Getenv("STRAIT_CORPORA"), "STRAIT_CORPORA"
	if base == "" {
		how = "../shared/corpora beside the module root"
		if root, err := corporaModuleRoot(); err == nil {
			base = filepath.Join(root, "..", "shared", "corpora")
		} else {
			corporaMissing(t, "cannot locate the module root: "+err.Error())
		}
	}
	dir := filepath.Join(base, sub)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		corporaMissing(t, "corpus "+sub+" not found at "+dir+" (from "+how+")")
	}
	return dir
}

// corporaModuleRoot walks up from the working directory (the package
// directory under go test) to the first directory that holds go.mod.
func corporaModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", os.ErrNotExist
		}
		dir = parent
	}
}

func corporaMissing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true requires the corpora (set STRAIT_CORPORA)")
	}
	t.Skip(msg + "; set STRAIT_CORPORA to run these tests")
}

// corporaErr formats a codec result for test messages: "parsed" for nil,
// status and rule for an *Error.
func corporaErr(err error) string {
	if err == nil {
		return "parsed"
	}
	var e *Error
	if errors.As(err, &e) {
		return fmt.Sprintf("%d %s", e.Status, e.Reason)
	}
	return err.Error()
}

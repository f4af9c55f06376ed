package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"testing"
)

func TestWireStringForms(t *testing.T) {
	var got struct {
		A wireStrings `json:"a"`
		P wireString  `json:"p"`
	}
	in := `{"a": ["plain", {"b64": "/w=="}, "é"], "p": {"b64": "L3RtcC+A"}}`
	if err := json.Unmarshal([]byte(in), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.A) != 3 || got.A[0] != "plain" || got.A[1] != "\xff" || got.A[2] != "é" {
		t.Fatalf("argv %q", got.A)
	}
	if got.P != "/tmp/\x80" {
		t.Fatalf("path %q", got.P)
	}
	for _, bad := range []string{`{"a": [1]}`, `{"a": [{"b64": "!!"}]}`, `{"a": [{"x": "y"}]}`, `{"p": []}`} {
		if err := json.Unmarshal([]byte(bad), &got); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// Bytes that are not UTF-8 reach execve, the environment and the working
// directory exactly.
func TestExecNonUTF8Bytes(t *testing.T) {
	dir := t.TempDir() + "/d\xfe"
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b64 := func(s string) map[string]string {
		return map[string]string{"b64": encodeB64(s)}
	}
	h := newHost(t)
	h.hello()
	r := h.run(1, map[string]interface{}{
		"argv": []interface{}{"/bin/sh", "-c", `printf '%s|%s|' "$1" "$V"; pwd`, "sh", b64("a\xffb")},
		"env":  []interface{}{b64("V=\x80")},
		"cwd":  b64(dir),
	})
	r.wantExit(t, 0, nil, false)
	if want := "a\xffb|\x80|" + dir + "\n"; r.stdout.String() != want {
		t.Fatalf("stdout %q, want %q", r.stdout.String(), want)
	}
}

func encodeB64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// The golden EXEC with byte strings decodes to the bytes the host meant.
func TestGoldenExecBytes(t *testing.T) {
	for _, gf := range loadGolden(t).Frames {
		if gf.Name != "exec_bytes" {
			continue
		}
		var r execRequest
		if err := json.Unmarshal(gf.JSON, &r); err != nil {
			t.Fatal(err)
		}
		if len(r.Argv) != 3 || r.Argv[2] != "\xff" || len(r.Env) != 1 || r.Env[0] != "B=\x80" {
			t.Fatalf("argv %q env %q", r.Argv, r.Env)
		}
		return
	}
	t.Fatal("golden file has no exec_bytes frame")
}

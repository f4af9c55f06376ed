package main

// Byte strings on the wire (docs/protocol.md, "Byte strings"): argv, env,
// cwd and file paths are bytes to Linux, not text. The host sends one as a
// JSON string when it is valid UTF-8, and as {"b64": "<base64>"} otherwise.

import (
	"encoding/base64"
	"encoding/json"
	"errors"
)

// wireString is one byte string in either form.
type wireString string

func (w *wireString) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*w = wireString(s)
		return nil
	}
	var o struct {
		B64 *string `json:"b64"`
	}
	if err := json.Unmarshal(b, &o); err != nil || o.B64 == nil {
		return errors.New(`expected a string or {"b64": "..."}`)
	}
	raw, err := base64.StdEncoding.DecodeString(*o.B64)
	if err != nil {
		return errors.New("bad base64 in a byte string: " + err.Error())
	}
	*w = wireString(raw)
	return nil
}

// wireStrings is a list of byte strings, seen by Go as []string.
type wireStrings []string

func (w *wireStrings) UnmarshalJSON(b []byte) error {
	var items []wireString
	if err := json.Unmarshal(b, &items); err != nil {
		return err
	}
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = string(it)
	}
	*w = out
	return nil
}

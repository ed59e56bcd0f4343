package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
)

// Settings are flags: each is declared once, on a flag.FlagSet, by the RegisterFlags of
// the Config it belongs to, and loadSettings gives it a value from the highest source
// that has one, under the same name in each:
//
//	flag          --offer-timeout 20s
//	environment   UNDERSTUDY_OFFER_TIMEOUT=20s (see envName)
//	config file   {"offer-timeout": "20s"}
//	default       what the Config held when its flags were declared
//
// A list setting (listVar) takes all its values from that one source: the flag
// repeated, comma-separated in the environment, a JSON array in the file.
//
// loadSettings parses args into fs, then sets each flag args left alone from the
// environment, then each flag still alone from the JSON file named by the flag
// fileFlag (whose own value comes from args or the environment).
func loadSettings(fs *flag.FlagSet, args []string, getenv func(string) string, fileFlag string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		key := envName(f.Name)
		v := getenv(key)
		if given[f.Name] || v == "" {
			return
		}
		vals := []string{v}
		if isList(f) {
			vals = strings.Split(v, ",")
		}
		if err := setAll(fs, f, vals); err != nil {
			errs = append(errs, fmt.Errorf("%s from %s: %w", f.Name, key, err))
		}
		given[f.Name] = true
	})
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if path := fs.Lookup(fileFlag).Value.String(); path != "" {
		return applyFile(fs, path, given, fileFlag)
	}
	return nil
}

// envName is the environment variable of setting name: UNDERSTUDY_, then the name in
// upper case with dashes as underscores.
func envName(name string) string {
	return "UNDERSTUDY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// applyFile sets, from the JSON object in the file at path, every setting not given.
// Its keys are setting names; values are strings, numbers, booleans, or arrays of
// them for a list setting.
func applyFile(fs *flag.FlagSet, path string, given map[string]bool, fileFlag string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(doc)) {
		f := fs.Lookup(name)
		if f == nil || name == fileFlag {
			errs = append(errs, fmt.Errorf("config %s: unknown setting %q%s", path, name, suggest(fs, name)))
			continue
		}
		if given[name] {
			continue
		}
		vals, err := fileValues(f, doc[name])
		if err == nil {
			err = setAll(fs, f, vals)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("config %s: %s: %w", path, name, err))
		}
	}
	return errors.Join(errs...)
}

// fileValues is the text of raw, a file's value for setting f, as the flag would take it.
func fileValues(f *flag.Flag, raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '[' {
		if !isList(f) {
			return nil, errors.New("want one value, not an array")
		}
		var elems []json.RawMessage
		if err := json.Unmarshal(raw, &elems); err != nil {
			return nil, err
		}
		vals := make([]string, 0, len(elems))
		for _, e := range elems {
			v, err := fileScalar(e)
			if err != nil {
				return nil, err
			}
			vals = append(vals, v)
		}
		return vals, nil
	}
	v, err := fileScalar(raw)
	if err != nil {
		return nil, err
	}
	return []string{v}, nil
}

// fileScalar is the text of a JSON string, number or boolean.
func fileScalar(raw json.RawMessage) (string, error) {
	switch {
	case len(raw) == 0:
		return "", errors.New("no value")
	case raw[0] == '"':
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	case raw[0] == '{':
		return "", errors.New("want a string, number or boolean, not an object (settings are flat keys)")
	case string(raw) == "null":
		return "", errors.New("want a string, number or boolean, not null")
	}
	return string(raw), nil // a number or a boolean, as JSON wrote it
}

// setAll sets f to vals through fs, so that fs counts f as set.
func setAll(fs *flag.FlagSet, f *flag.Flag, vals []string) error {
	for _, v := range vals {
		if err := fs.Set(f.Name, v); err != nil {
			return fmt.Errorf("invalid value %q: %w", v, err)
		}
	}
	return nil
}

// suggest names the setting a misspelt file key probably meant: the same with dashes
// for underscores, or the settings it is the prefix of.
func suggest(fs *flag.FlagSet, key string) string {
	if dashed := strings.ReplaceAll(strings.ToLower(key), "_", "-"); fs.Lookup(dashed) != nil {
		return fmt.Sprintf(" (did you mean %q?)", dashed)
	}
	var under []string
	fs.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, key+"-") {
			under = append(under, f.Name)
		}
	})
	if len(under) > 0 {
		return fmt.Sprintf(" (settings are flat keys: %s)", strings.Join(under, ", "))
	}
	return ""
}

// listValue is a list setting of strings: each Set adds one, and the first Set
// replaces the default.
type listValue struct {
	p   *[]string
	set bool
}

// listVar declares a list setting on fs (see listValue).
func listVar(fs *flag.FlagSet, p *[]string, name, usage string) {
	fs.Var(&listValue{p: p}, name, usage)
}

func (l *listValue) String() string {
	if l == nil || l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l *listValue) Set(v string) error {
	if !l.set {
		*l.p, l.set = nil, true
	}
	*l.p = append(*l.p, v)
	return nil
}

func isList(f *flag.Flag) bool {
	_, ok := f.Value.(*listValue)
	return ok
}

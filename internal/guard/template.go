package guard

import (
	"errors"
	"fmt"
	"strings"

	"github.com/fencedlock/fencedlock/core"
)

// Template is a parsed key template such as "coupon:{id}" or
// "transfer:{from}:{to}": literal text with {name} placeholders that an
// adapter fills from request values (path values, gin params). The zero
// value is not usable; build one with ParseTemplate.
type Template struct {
	parts []tmplPart
	names []string
	lits  int // total length of the literal parts
}

type tmplPart struct {
	text  string // literal text, or the placeholder name
	isVar bool
}

// ParseTemplate parses s. Placeholder names are non-empty and hold no
// braces, '/', spaces or control characters; braces cannot be escaped.
func ParseTemplate(s string) (Template, error) {
	if s == "" {
		return Template{}, errors.New("empty template")
	}
	var t Template
	rest := s
	for rest != "" {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			t.addLit(rest)
			break
		}
		if rest[open] == '}' {
			return Template{}, fmt.Errorf("template %q: '}' without '{'", s)
		}
		t.addLit(rest[:open])
		end := strings.IndexAny(rest[open+1:], "{}")
		if end < 0 || rest[open+1+end] != '}' {
			return Template{}, fmt.Errorf("template %q: unclosed '{'", s)
		}
		name := rest[open+1 : open+1+end]
		if !validName(name) {
			return Template{}, fmt.Errorf("template %q: bad placeholder name %q", s, name)
		}
		t.parts = append(t.parts, tmplPart{text: name, isVar: true})
		t.names = append(t.names, name)
		rest = rest[open+1+end+1:]
	}
	return t, nil
}

func (t *Template) addLit(s string) {
	if s == "" {
		return
	}
	t.parts = append(t.parts, tmplPart{text: s})
	t.lits += len(s)
}

func validName(n string) bool {
	if n == "" {
		return false
	}
	for _, r := range n {
		if r == '/' || r == '{' || r == '}' || r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// Names returns the placeholder names in order of appearance.
func (t Template) Names() []string { return t.names }

// Expand fills the placeholders with values from get and validates the
// result with core.ValidateKey. An empty value is an invalid key (never a
// lock on a half-filled key); errors from get are returned as they are.
func (t Template) Expand(get func(name string) (string, error)) (string, error) {
	if len(t.parts) == 1 && t.parts[0].isVar {
		v, err := get(t.parts[0].text)
		if err != nil {
			return "", err
		}
		return checkValue(v)
	}
	var b strings.Builder
	b.Grow(t.lits + 16*len(t.names))
	for _, p := range t.parts {
		if !p.isVar {
			b.WriteString(p.text)
			continue
		}
		v, err := get(p.text)
		if err != nil {
			return "", err
		}
		if v == "" {
			return "", fmt.Errorf("%w: empty value for a template placeholder", core.ErrInvalidKey)
		}
		b.WriteString(v)
	}
	return checkValue(b.String())
}

func checkValue(v string) (string, error) {
	if err := core.ValidateKey(v); err != nil {
		return "", err
	}
	return v, nil
}

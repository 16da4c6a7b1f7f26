package archive

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

const maxLinkHops = 40 // as Linux's MAXSYMLINKS

var modulePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)

// project judges the archive as a whole once every entry was validated:
// where the project is, that its links stay inside it, and what it holds.
func (s *scanner) project(format Format) (Project, error) {
	p := Project{Format: format, Entries: len(s.entries), UnpackedBytes: s.unpacked}
	root, err := s.findRoot()
	if err != nil {
		return Project{}, err
	}
	p.Root = root
	if err := s.checkLinks(root); err != nil {
		return Project{}, err
	}
	if e, ok := s.lookup(root, "scrapy.cfg"); ok && e.typ == typeFile {
		p.Kind = KindScrapy
		if err := s.scrapyProject(root, &p); err != nil {
			return Project{}, err
		}
	} else {
		p.Kind = KindBundle
		spiders, err := s.bundleSpiders(root)
		if err != nil {
			return Project{}, err
		}
		p.Spiders = spiders
	}
	if e, ok := s.lookup(root, "requirements.txt"); ok && e.typ == typeFile {
		p.Requirements = true
	}
	p.Wheels = s.isDir(join(root, "wheels"))
	return p, nil
}

func join(root, name string) string {
	if root == "" {
		return name
	}
	return root + "/" + name
}

// lookup finds the entry at name relative to the project root; entries that
// are not unpacked do not exist.
func (s *scanner) lookup(root, name string) (entry, bool) {
	i, ok := s.index[join(root, name)]
	if !ok || s.entries[i].ignored {
		return entry{}, false
	}
	return s.entries[i], true
}

func (s *scanner) isDir(name string) bool {
	if i, ok := s.index[name]; ok {
		return s.entries[i].typ == typeDir
	}
	_, ok := s.parents[name]
	return ok
}

// findRoot returns "" when the project is at the archive's root, or the one
// top-level folder that holds it.
func (s *scanner) findRoot() (string, error) {
	marker := func(root string) (bool, error) {
		cfg, okCfg := s.lookup(root, "scrapy.cfg")
		man, okMan := s.lookup(root, "scrapethis.json")
		switch {
		case okCfg && cfg.typ != typeFile:
			return false, invalidf("%s is not a regular file", join(root, "scrapy.cfg"))
		case okMan && man.typ != typeFile:
			return false, invalidf("%s is not a regular file", join(root, "scrapethis.json"))
		case okCfg && okMan:
			return false, invalidf("the archive has both scrapy.cfg and scrapethis.json: it is a Scrapy project or a bundle, not both")
		}
		return okCfg || okMan, nil
	}
	if ok, err := marker(""); ok || err != nil {
		return "", err
	}
	top := ""
	for _, e := range s.entries {
		if e.ignored {
			continue
		}
		first, _, _ := strings.Cut(e.name, "/")
		if top != "" && first != top {
			top = ""
			break
		}
		top = first
	}
	if top != "" && s.isDir(top) {
		if ok, err := marker(top); ok || err != nil {
			return top, err
		}
	}
	return "", invalidf("neither scrapy.cfg nor scrapethis.json at the archive's root or inside its one top-level folder")
}

// checkLinks follows every symlink as the kernel would and refuses one
// that leaves the project; hardlinks must stay inside it too.
func (s *scanner) checkLinks(root string) error {
	for _, e := range s.entries {
		if e.ignored {
			continue
		}
		rel := strings.TrimPrefix(e.name, root+"/")
		switch e.typ {
		case typeHardlink:
			if t, ok := s.index[e.link]; !ok || s.entries[t].ignored || (root != "" && !strings.HasPrefix(e.link, root+"/")) {
				return invalidf("hardlink %q points outside the project (target %q)", e.name, e.link)
			}
		case typeSymlink:
			if err := s.resolve(root, rel, e); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *scanner) resolve(root, rel string, link entry) error {
	var cur []string
	if dir, _, ok := cutLast(rel); ok {
		cur = strings.Split(dir, "/")
	}
	queue := strings.Split(link.link, "/")
	for hops := 0; len(queue) > 0; {
		c := queue[0]
		queue = queue[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				if root != "" {
					return invalidf("symlink %q points outside the project folder %q (target %q)", link.name, root, link.link)
				}
				return invalidf("symlink %q points outside the archive (target %q)", link.name, link.link)
			}
			cur = cur[:len(cur)-1]
			continue
		}
		cur = append(cur, c)
		e, ok := s.lookup(root, strings.Join(cur, "/"))
		if !ok || e.typ != typeSymlink {
			continue
		}
		if hops++; hops > maxLinkHops {
			return invalidf("symlink %q: too many levels of symlinks", link.name)
		}
		cur = cur[:len(cur)-1]
		if strings.HasPrefix(e.link, "/") {
			return invalidf("symlink %q points outside the archive (through %q)", link.name, e.name)
		}
		queue = append(strings.Split(e.link, "/"), queue...)
	}
	return nil
}

func cutLast(name string) (dir, base string, ok bool) {
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return "", name, false
	}
	return name[:i], name[i+1:], true
}

func (s *scanner) captureOf(root, name string) ([]byte, error) {
	b := s.captured[join(root, name)]
	if len(b) > maxCapturedBytes {
		return nil, invalidf("%s is larger than %s", name, mib(maxCapturedBytes))
	}
	return b, nil
}

// scrapyProject reads scrapy.cfg and checks that its settings module is in
// the archive.
func (s *scanner) scrapyProject(root string, p *Project) error {
	data, err := s.captureOf(root, "scrapy.cfg")
	if err != nil {
		return err
	}
	cfg, err := parseINI(data)
	if err != nil {
		return invalidf("scrapy.cfg: %v", err)
	}
	p.SettingsModule = cfg.get("settings", "default")
	p.ScrapyProject = cfg.get("deploy", "project")
	if p.ScrapyProject == "" {
		for _, sec := range cfg.order {
			if strings.HasPrefix(sec, "deploy:") && cfg.get(sec, "project") != "" {
				p.ScrapyProject = cfg.get(sec, "project")
				break
			}
		}
	}
	if m := p.SettingsModule; m != "" {
		if !modulePattern.MatchString(m) {
			return invalidf("scrapy.cfg: [settings] default %q is not a Python module path", m)
		}
		file := strings.ReplaceAll(m, ".", "/")
		_, okFile := s.lookup(root, file+".py")
		_, okPkg := s.lookup(root, file+"/__init__.py")
		if !okFile && !okPkg {
			return invalidf("scrapy.cfg: settings module %s: neither %s.py nor %s/__init__.py is in the project", m, file, file)
		}
	}
	return nil
}

// ini is what configparser would read from scrapy.cfg, as far as Scrapy
// uses it: sections of keys (lower-cased) and values.
type ini struct {
	order    []string
	sections map[string]map[string]string
}

func (c ini) get(section, key string) string { return c.sections[section][key] }

func parseINI(data []byte) (ini, error) {
	c := ini{sections: map[string]map[string]string{}}
	var sec map[string]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxCapturedBytes+1)
	lastKey := ""
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), " \t\r")
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || trimmed[0] == '#' || trimmed[0] == ';':
			continue
		case line[0] == ' ' || line[0] == '\t':
			if sec == nil || lastKey == "" {
				return ini{}, fmt.Errorf("line %d is indented but continues nothing", n)
			}
			sec[lastKey] += "\n" + trimmed
			continue
		case trimmed[0] == '[':
			if !strings.HasSuffix(trimmed, "]") {
				return ini{}, fmt.Errorf("line %d: a section header must end with ]", n)
			}
			name := trimmed[1 : len(trimmed)-1]
			if c.sections[name] == nil {
				c.sections[name] = map[string]string{}
				c.order = append(c.order, name)
			}
			sec, lastKey = c.sections[name], ""
			continue
		}
		i := strings.IndexAny(trimmed, "=:")
		if i <= 0 {
			return ini{}, fmt.Errorf("line %d is neither `key = value` nor a [section]", n)
		}
		if sec == nil {
			return ini{}, fmt.Errorf("line %d comes before any [section]", n)
		}
		lastKey = strings.ToLower(strings.TrimSpace(trimmed[:i]))
		sec[lastKey] = strings.TrimSpace(trimmed[i+1:])
	}
	if err := sc.Err(); err != nil {
		return ini{}, err
	}
	return c, nil
}

// bundleSpiders reads scrapethis.json, {"spiders": {"NAME": "relative/path"}},
// and checks each path is an executable regular file of the project.
func (s *scanner) bundleSpiders(root string) (map[string]string, error) {
	data, err := s.captureOf(root, "scrapethis.json")
	if err != nil {
		return nil, err
	}
	var m struct {
		Spiders json.RawMessage `json:"spiders"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, invalidf("scrapethis.json is not valid: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, invalidf("scrapethis.json has more after its object")
	}
	names, err := manifestSpiders(m.Spiders)
	if err != nil {
		return nil, err
	}
	spiders := make(map[string]string, len(names))
	for _, kv := range names {
		name, raw := kv[0], kv[1]
		if !ValidName(name) {
			return nil, invalidf("scrapethis.json: spider name %q is not valid (a letter or digit, then up to 63 letters, digits, '.', '_' or '-')", name)
		}
		if _, dup := spiders[name]; dup {
			return nil, invalidf("scrapethis.json names spider %q twice", name)
		}
		rel, err := cleanName(raw)
		switch {
		case err != nil && strings.HasPrefix(raw, "/"):
			return nil, invalidf("scrapethis.json: spider %q: path %q is absolute; paths are relative to the project", name, raw)
		case err != nil && strings.Contains(raw, ".."):
			return nil, invalidf("scrapethis.json: spider %q: path %q leaves the project", name, raw)
		case err != nil:
			return nil, invalidf("scrapethis.json: spider %q: path %q is not valid", name, raw)
		case rel == "":
			return nil, invalidf("scrapethis.json: spider %q has an empty path", name)
		}
		e, ok := s.lookup(root, rel)
		switch {
		case !ok:
			return nil, invalidf("scrapethis.json: spider %q: %q is not in the archive", name, raw)
		case e.typ != typeFile:
			return nil, invalidf("scrapethis.json: spider %q: %q is not a regular file", name, raw)
		case !e.exec:
			return nil, invalidf("scrapethis.json: spider %q: %q is not executable (it has no execute bit)", name, raw)
		}
		spiders[name] = rel
	}
	return spiders, nil
}

// manifestSpiders reads the "spiders" object in order, keeping duplicate
// keys that encoding/json would silently merge.
func manifestSpiders(raw json.RawMessage) ([][2]string, error) {
	notObject := invalidf(`scrapethis.json: "spiders" must be an object of spider name to path`)
	if len(raw) == 0 {
		return nil, invalidf(`scrapethis.json has no "spiders"`)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, notObject
	}
	var out [][2]string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, notObject
		}
		name, _ := t.(string)
		var p string
		if err := dec.Decode(&p); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return nil, invalidf("scrapethis.json: spider %q: the path must be a string", name)
			}
			return nil, notObject
		}
		out = append(out, [2]string{name, p})
	}
	if len(out) == 0 {
		return nil, invalidf("scrapethis.json lists no spiders")
	}
	return out, nil
}

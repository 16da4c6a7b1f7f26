package codecache

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckRequirements(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "wheels", "dir.whl"), 0o755)
	os.WriteFile(filepath.Join(dir, "wheels", "a-1.0-py3-none-any.whl"), []byte("zip"), 0o644)

	allowed := []string{
		"",
		"# a comment",
		"scrapy",
		"Scrapy>=2.8,<3  # pinned",
		"requests[socks, security] == 2.31.0",
		"zope.interface~=6.0",
		"attrs (>=22.1)",
		"parsel==1.8.*; python_version >= \"3.8\"",
		"foo==1.0 --hash=sha256:0123abcd --hash sha256:ffff",
		"long-name>=1.0 \\\n  --hash=sha256:0abc",
		"--pre",
		"--prefer-binary",
		"--require-hashes",
		"wheels/a-1.0-py3-none-any.whl",
		"a==1\r\nb==2\r\n",
	}
	for _, text := range allowed {
		if err := checkRequirements(text, dir); err != nil {
			t.Errorf("%q refused: %v", text, err)
		}
	}
	refused := map[string]string{
		"-e .":                                    "option -e",
		"--editable=./pkg":                        "option --editable",
		"./pkg":                                   "a directory or a source archive",
		"/abs/pkg":                                "a directory or a source archive",
		"pkg/":                                    "a directory or a source archive",
		"evil @ file:///tmp/evil-1.0.tar.gz":      "direct references",
		"evil@https://example.com/evil.whl":       "direct references",
		"https://example.com/evil-1.0.tar.gz":     "direct references",
		"file:evil-1.0.tar.gz":                    "names an archive file",
		"file:evil":                               "not a requirement",
		"evil-1.0.tar.gz":                         "names an archive file",
		"wheels/evil-1.0.zip":                     "names an archive file",
		"wheels/missing-1.0-py3-none-any.whl":     "not a wheel file of the project",
		"wheels/dir.whl":                          "not a wheel file of the project",
		"../outside-1.0-py3-none-any.whl":         "not a wheel file of the project",
		"--no-binary :all:":                       "option --no-binary",
		"--only-binary :none:":                    "option --only-binary",
		"-i https://evil.example/simple":          "option -i",
		"--extra-index-url=https://evil.example/": "option --extra-index-url",
		"--find-links .":                          "option --find-links",
		"-r other.txt":                            "option -r",
		"-c constraints.txt":                      "option -c",
		"foo --install-option=--prefix=/":         "only --hash options",
		"foo --config-settings x=y":               "only --hash options",
		"foo==${VERSION}":                         "environment variables",
		"scrapy\n-e ./pkg":                        "line 2",
	}
	for text, want := range refused {
		err := checkRequirements(text, dir)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error saying %q", text, err, want)
		}
	}
}

func TestPipReason(t *testing.T) {
	t.Parallel()
	out := "Looking in links: /x/wheels\n" +
		"ERROR: Could not find a version that satisfies the requirement nothere (from versions: none)\n" +
		"ERROR: No matching distribution found for nothere\n"
	got := pipReason(out)
	want := "Could not find a version that satisfies the requirement nothere (from versions: none)\nNo matching distribution found for nothere\n"
	if !strings.HasPrefix(got, want) || !strings.Contains(got, "source distribution") {
		t.Errorf("pipReason = %q", got)
	}
	if got := pipReason("a\nb\nc\nd\n"); got != "b\nc\nd" {
		t.Errorf("pipReason without ERROR lines = %q, want its last three lines", got)
	}
}

func TestTailBuffer(t *testing.T) {
	t.Parallel()
	b := &tailBuffer{max: 8}
	b.Write([]byte("12345"))
	if b.String() != "12345" {
		t.Fatalf("got %q", b.String())
	}
	b.Write([]byte("6789"))
	if b.String() != "...\n23456789" {
		t.Fatalf("got %q", b.String())
	}
	b.Write([]byte("abcdefghijk"))
	if b.String() != "...\ndefghijk" {
		t.Fatalf("got %q", b.String())
	}
}

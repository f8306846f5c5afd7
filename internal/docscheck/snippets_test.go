package docscheck

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// imports maps the package names a fragment may use to their import paths;
// a fragment is compiled with those it mentions.
var imports = map[string]string{
	"context": "context", "errors": "errors", "fmt": "fmt", "log": "log",
	"time": "time", "flag": "flag", "os": "os", "http": "net/http",
	"sql": "database/sql", "slog": "log/slog",
	"core":        "github.com/fencedlock/fencedlock/core",
	"etcdlock":    "github.com/fencedlock/fencedlock/core/etcdlock",
	"locktest":    "github.com/fencedlock/fencedlock/core/locktest",
	"httpmw":      "github.com/fencedlock/fencedlock/httpmw",
	"ginmw":       "github.com/fencedlock/fencedlock/ginmw",
	"grpcmw":      "github.com/fencedlock/fencedlock/grpcmw",
	"sqlguard":    "github.com/fencedlock/fencedlock/sqlguard",
	"idempotency": "github.com/fencedlock/fencedlock/idempotency",
	"lockdebug":   "github.com/fencedlock/fencedlock/lockdebug",
	"fencesign":   "github.com/fencedlock/fencedlock/fencesign",
	"oteldemo":    "github.com/fencedlock/fencedlock/otel/oteldemo",
	"lockotel":    `lockotel "github.com/fencedlock/fencedlock/otel"`,
	"otel":        "go.opentelemetry.io/otel",
	"redis":       "github.com/redis/go-redis/v9",
	"miniredis":   "github.com/alicebob/miniredis/v2",
	"gin":         "github.com/gin-gonic/gin",
	"grpc":        "google.golang.org/grpc",
	"clientv3":    "go.etcd.io/etcd/client/v3",
}

// prelude declares the free identifiers fragments may use: the values a
// reader of the docs is assumed to have at hand.
const prelude = `package snippet

import (
	"context"
	"database/sql"
	"net/http"

	"github.com/fencedlock/fencedlock/core"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

var (
	ctx                            = context.Background()
	rdb, s0, s1, s2                *redis.Client
	clusterClient                  *redis.ClusterClient
	addrs                          []string
	addr, target, url              string
	id, balance                    int64
	locker                         *core.Client
	db                             *sql.DB
	r                              *http.Request
	mux                            = http.NewServeMux()
	claimHandler, transferHandler  http.Handler
	reserveHandler, settle, charge http.Handler
	docHandler, exportHandler      http.Handler
	claim, transfer                gin.HandlerFunc
	tp                             *sdktrace.TracerProvider
	mp                             *sdkmetric.MeterProvider
)
`

// goFile turns a Go block into the source of a package named snippet, with
// //line directives that point errors at the Markdown file.
func goFile(b block) (string, error) {
	switch {
	case b.marker == "fragment":
		return fragmentFile(b), nil
	case b.marker != "" && !strings.HasPrefix(b.marker, "example "):
		return "", fmt.Errorf("unknown docscheck marker %q", b.marker)
	case !regexp.MustCompile(`(?m)^package \w+`).MatchString(b.text):
		return "", fmt.Errorf("a go block must be a whole program, or be marked <!-- docscheck: fragment -->")
	}
	text := regexp.MustCompile(`(?m)^package \w+`).ReplaceAllString(b.text, "package snippet")
	return fmt.Sprintf("//line %s:%d\n%s", b.file, b.line, text), nil
}

// fragmentFile wraps a fragment into a function. A leading import block is
// kept; other packages are imported by name; variables the fragment
// declares are marked used, since a fragment often stops where a program
// would go on.
func fragmentFile(b block) string {
	own, body, bodyLine := splitImports(b.text, b.line)
	wrapped := "package snippet\nfunc _() {\n" + body + "\n}\n"
	fset := token.NewFileSet()
	f, _ := parser.ParseFile(fset, "", wrapped, 0) // a syntax error is the compiler's to report
	var used, declared []string
	results := ""
	if f != nil {
		used, declared, results = inspectFragment(f)
	}
	var src strings.Builder
	src.WriteString("package snippet\n\nimport (\n")
	for _, imp := range own {
		src.WriteString("\t" + imp + "\n")
	}
	for _, name := range used {
		spec, ok := imports[name]
		if !ok {
			continue
		}
		if !strings.Contains(spec, `"`) {
			spec = `"` + spec + `"`
		}
		if !slices.ContainsFunc(own, func(o string) bool { return strings.HasSuffix(o, spec[strings.Index(spec, `"`):]) }) {
			src.WriteString("\t" + spec + "\n")
		}
	}
	fmt.Fprintf(&src, ")\n\nfunc _() %s {\n//line %s:%d\n%s\n", results, b.file, bodyLine, body)
	for _, v := range declared {
		fmt.Fprintf(&src, "\t_ = %s\n", v)
	}
	if results != "" {
		src.WriteString("\treturn nil\n")
	}
	src.WriteString("}\n")
	return src.String()
}

// splitImports cuts a leading import declaration off a fragment.
func splitImports(text string, line int) (imps []string, body string, bodyLine int) {
	t := strings.TrimLeft(text, "\n")
	line += len(text) - len(t)
	if !strings.HasPrefix(t, "import") {
		return nil, text, line
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "", "package p\n"+t, parser.ImportsOnly)
	if err != nil || len(f.Decls) == 0 {
		return nil, text, line
	}
	end := fset.Position(f.Decls[len(f.Decls)-1].End()).Offset - len("package p\n")
	for _, s := range f.Imports {
		imp := s.Path.Value
		if s.Name != nil {
			imp = s.Name.Name + " " + imp
		}
		imps = append(imps, imp)
	}
	return imps, t[end:], line + strings.Count(t[:end], "\n")
}

// inspectFragment lists the package-like names a fragment selects from,
// the variables its top level declares, and its result list ("error" when
// it returns a value).
func inspectFragment(f *ast.File) (used, declared []string, results string) {
	body := f.Decls[0].(*ast.FuncDecl).Body
	ast.Inspect(body, func(n ast.Node) bool {
		if s, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := s.X.(*ast.Ident); ok && !slices.Contains(used, id.Name) {
				used = append(used, id.Name)
			}
		}
		return true
	})
	ast.Inspect(body, func(n ast.Node) bool { // the fragment's own returns, not its closures'
		switch n := n.(type) {
		case *ast.FuncLit:
			return false
		case *ast.ReturnStmt:
			if len(n.Results) == 1 {
				results = "error"
			}
		}
		return true
	})
	add := func(id *ast.Ident) {
		if id.Name != "_" && !slices.Contains(declared, id.Name) {
			declared = append(declared, id.Name)
		}
	}
	for _, st := range body.List {
		switch st := st.(type) {
		case *ast.AssignStmt:
			if st.Tok == token.DEFINE {
				for _, e := range st.Lhs {
					add(e.(*ast.Ident))
				}
			}
		case *ast.DeclStmt:
			for _, sp := range st.Decl.(*ast.GenDecl).Specs {
				if vs, ok := sp.(*ast.ValueSpec); ok {
					for _, id := range vs.Names {
						add(id)
					}
				}
			}
		}
	}
	slices.Sort(used)
	return used, declared, results
}

// buildSnippets writes the blocks under a temporary directory in the
// module and compiles them with one go build: every fragment as a file of
// one package (with the prelude), every whole program as a package of its
// own. It returns the compiler's complaints per block.
func buildSnippets(t *testing.T, root string, blocks []block) map[string][]string {
	t.Helper()
	dir, err := os.MkdirTemp(root, ".docscheck-") // a dot dir: ./... never matches it
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("DOCSCHECK_KEEP") == "" {
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	problems := map[string][]string{}
	pkgs := map[string]bool{}
	write := func(pkg, name, text string) {
		if err := os.MkdirAll(filepath.Join(dir, pkg), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, pkg, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		pkgs[pkg] = true
	}
	for i, b := range blocks {
		src, err := goFile(b)
		switch {
		case err != nil:
			problems[b.String()] = append(problems[b.String()], err.Error())
		case b.marker == "fragment":
			write("fragments", fmt.Sprintf("f%03d.go", i), src)
			write("fragments", "prelude.go", prelude)
		default:
			write(fmt.Sprintf("p%03d", i), "main.go", src)
		}
	}
	if len(pkgs) == 0 {
		return problems
	}
	args := []string{"build", "-o", os.DevNull, "-gcflags=-e"}
	for pkg := range pkgs {
		rel, _ := filepath.Rel(root, filepath.Join(dir, pkg))
		args = append(args, "./"+filepath.ToSlash(rel))
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		attributeOutput(string(out), blocks, problems)
		if len(problems) == 0 {
			problems["go build"] = []string{err.Error()}
		}
	}
	return problems
}

var posRE = regexp.MustCompile(`^(\S+\.md):(\d+)(?::\d+)?: `)

// attributeOutput files go build's complaints under the block they point
// into (the //line directives name the Markdown file and line); anything
// else is filed under "go build".
func attributeOutput(out string, blocks []block, problems map[string][]string) {
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "# ") {
			continue
		}
		where := "go build"
		if m := posRE.FindStringSubmatch(l); m != nil {
			line, _ := strconv.Atoi(m[2])
			for _, b := range blocks {
				if b.file == m[1] && line >= b.line && line < b.line+strings.Count(b.text, "\n") {
					where = b.String()
				}
			}
		}
		problems[where] = append(problems[where], l)
	}
}

func goBlocks(blocks []block) []block {
	var out []block
	for _, b := range blocks {
		if b.lang == "go" || b.lang == "golang" {
			out = append(out, b)
		}
	}
	return out
}

func TestGoBlocks_compile(t *testing.T) {
	if testing.Short() {
		t.Skip("docscheck: compiling the docs' Go blocks is skipped with -short")
	}
	root := moduleRoot(t)
	var all []block
	for _, f := range docFiles(t, root) {
		blocks, _ := parseMarkdown(f, readFile(t, filepath.Join(root, f)))
		all = append(all, goBlocks(blocks)...)
	}
	if len(all) == 0 {
		t.Fatal("docscheck: no go blocks found; is the parser broken?")
	}
	for where, msgs := range buildSnippets(t, root, all) {
		t.Errorf("%s: does not compile:\n\t%s", where, strings.Join(msgs, "\n\t"))
	}
}

// The negative control: a broken block is reported, under its own name,
// and a good one next to it is not.
func TestGoBlocks_brokenIsReported(t *testing.T) {
	if testing.Short() {
		t.Skip("docscheck: compiling is skipped with -short")
	}
	root := moduleRoot(t)
	md := "# t\n\n<!-- docscheck: fragment -->\n```go\nlocker := core.New(rdb)\ndefer locker.Close()\n```\n\n" +
		"<!-- docscheck: fragment -->\n```go\nlock, err := locker.Acquire(ctx, 42)\nif err != nil {\n\treturn err\n}\n```\n\n" +
		"```go\nx := 1\n```\n\n```sh\nnot go at all\n```\n"
	blocks, _ := parseMarkdown("docs/broken.md", md)
	got := buildSnippets(t, root, goBlocks(blocks))
	if _, ok := got["docs/broken.md:5"]; ok {
		t.Errorf("the good fragment is reported: %q", got["docs/broken.md:5"])
	}
	bad := strings.Join(got["docs/broken.md:11"], "\n")
	if !strings.Contains(bad, "docs/broken.md:11") || !strings.Contains(bad, "42") {
		t.Errorf("the broken fragment is not reported at docs/broken.md:11: %q", got)
	}
	if !strings.Contains(strings.Join(got["docs/broken.md:18"], ""), "whole program") {
		t.Errorf("an unmarked fragment is not reported: %q", got)
	}
	if len(got) != 2 {
		t.Errorf("reported %d blocks, want 2: %q", len(got), got)
	}
}

package archive_test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/binary"
	"hash/crc32"
	"io/fs"
	"testing"
)

// file is one entry of a test archive. typ is a tar type flag ('0' when
// zero); mode defaults to 0644, or 0755 for a directory.
type file struct {
	name string
	body string
	typ  byte
	mode int64
	link string
}

func reg(name, body string) file       { return file{name: name, body: body} }
func exe(name, body string) file       { return file{name: name, body: body, mode: 0o755} }
func dir(name string) file             { return file{name: name, typ: tar.TypeDir} }
func symlink(name, target string) file { return file{name: name, typ: tar.TypeSymlink, link: target} }
func hardlink(name, target string) file {
	return file{name: name, typ: tar.TypeLink, link: target}
}

// tgz builds a .tar.gz of files, in order; extra is appended to the tar
// stream after its end, inside the gzip stream.
func tgz(t testing.TB, files []file, extra ...[]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Typeflag: f.typ, Mode: f.mode, Linkname: f.link, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(f.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	for _, b := range extra {
		if _, err := gz.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zipFile is one entry of a test zip.
type zipFile struct {
	name string
	body string
	mode fs.FileMode // 0: no Unix mode at all (as zips made on Windows)
}

func zipOf(t testing.TB, comment string, files ...zipFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range files {
		h := &zip.FileHeader{Name: f.name, Method: zip.Deflate}
		if f.mode != 0 {
			h.SetMode(f.mode)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(f.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.SetComment(comment); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// lyingZip holds one deflated entry of n zero bytes whose headers claim
// it holds 100.
func lyingZip(t testing.TB, n int) []byte {
	t.Helper()
	var raw bytes.Buffer
	fw, _ := flate.NewWriter(&raw, flate.BestCompression)
	zeros := make([]byte, 1<<20)
	crc := crc32.NewIEEE()
	for left := n; left > 0; left -= len(zeros) {
		chunk := zeros[:min(left, len(zeros))]
		fw.Write(chunk)
		crc.Write(chunk)
	}
	fw.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	manifest, _ := zw.Create("scrapy.cfg")
	manifest.Write([]byte("[settings]\n"))
	h := &zip.FileHeader{Name: "bomb.bin", Method: zip.Deflate, CRC32: crc.Sum32(),
		CompressedSize64: uint64(raw.Len()), UncompressedSize64: 100}
	w, err := zw.CreateRaw(h)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(raw.Bytes())
	zw.Close()
	return buf.Bytes()
}

// overlappingZip holds one stored local entry that several central
// directory records point at, under different names (the trick of
// "better zip bombs").
func overlappingZip(names ...string) []byte {
	body := []byte("[settings]\n")
	crc := crc32.ChecksumIEEE(body)
	le := binary.LittleEndian
	var b []byte
	b = le.AppendUint32(b, 0x04034b50)
	b = le.AppendUint16(b, 20)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint16(b, 0) // stored
	b = le.AppendUint32(b, 0) // time, date
	b = le.AppendUint32(b, crc)
	b = le.AppendUint32(b, uint32(len(body)))
	b = le.AppendUint32(b, uint32(len(body)))
	b = le.AppendUint16(b, uint16(len(names[0])))
	b = le.AppendUint16(b, 0)
	b = append(b, names[0]...)
	b = append(b, body...)
	cd := len(b)
	for _, name := range names {
		b = le.AppendUint32(b, 0x02014b50)
		b = le.AppendUint16(b, 3<<8|20) // made by Unix
		b = le.AppendUint16(b, 20)
		b = le.AppendUint16(b, 0)
		b = le.AppendUint16(b, 0)
		b = le.AppendUint32(b, 0)
		b = le.AppendUint32(b, crc)
		b = le.AppendUint32(b, uint32(len(body)))
		b = le.AppendUint32(b, uint32(len(body)))
		b = le.AppendUint16(b, uint16(len(name)))
		b = le.AppendUint16(b, 0)
		b = le.AppendUint16(b, 0)
		b = le.AppendUint16(b, 0)
		b = le.AppendUint16(b, 0)
		b = le.AppendUint32(b, 0o100644<<16)
		b = le.AppendUint32(b, 0) // every record: the same local header
		b = append(b, name...)
	}
	cdSize := len(b) - cd
	b = le.AppendUint32(b, 0x06054b50)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint16(b, uint16(len(names)))
	b = le.AppendUint16(b, uint16(len(names)))
	b = le.AppendUint32(b, uint32(cdSize))
	b = le.AppendUint32(b, uint32(cd))
	b = le.AppendUint16(b, 0)
	return b
}

func gzipOf(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	gz.Write(b)
	gz.Close()
	return buf.Bytes()
}

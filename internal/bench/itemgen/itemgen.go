// Package itemgen makes the benchmark's items. The bench spider prints them
// and the raw COPY baseline stores them, so both sides handle byte-for-byte
// the same rows.
package itemgen

import "strconv"

// Append appends item i, {"i":42,"name":"item-42","price":0.42}, to b.
// It allocates nothing beyond growing b.
func Append(b []byte, i int) []byte {
	b = append(b, `{"i":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `,"name":"item-`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `","price":`...)
	b = strconv.AppendInt(b, int64(i%1000/100), 10)
	b = append(b, '.')
	c := i % 100
	b = append(b, byte('0'+c/10), byte('0'+c%10))
	return append(b, '}')
}

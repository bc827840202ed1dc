// buildlog records build timings from a YAML file in a SQLite database and prints a
// summary per scenario: the go-app workload's program (cgo: SQLite is compiled in).
package main

import (
	"database/sql"
	"fmt"
	"os"

	_ "github.com/mattn/go-sqlite3"
	"gopkg.in/yaml.v3"
)

const sample = `
cold: [61.0, 58.2, 63.9]
warm: [1.2, 1.1, 1.3]
`

func summarise(text string) (string, error) {
	var timings map[string][]float64
	if err := yaml.Unmarshal([]byte(text), &timings); err != nil {
		return "", err
	}
	db, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE runs (scenario TEXT, seconds REAL)"); err != nil {
		return "", err
	}
	for scenario, values := range timings {
		for _, v := range values {
			if _, err := db.Exec("INSERT INTO runs VALUES (?, ?)", scenario, v); err != nil {
				return "", err
			}
		}
	}
	rows, err := db.Query("SELECT scenario, COUNT(*), AVG(seconds) FROM runs GROUP BY scenario ORDER BY scenario")
	if err != nil {
		return "", err
	}
	defer rows.Close()
	out := ""
	for rows.Next() {
		var scenario string
		var n int
		var mean float64
		if err := rows.Scan(&scenario, &n, &mean); err != nil {
			return "", err
		}
		out += fmt.Sprintf("%-12s runs %d  mean %6.2fs\n", scenario, n, mean)
	}
	return out, rows.Err()
}

func main() {
	text := sample
	if len(os.Args) == 2 && os.Args[1] != "selftest" {
		data, err := os.ReadFile(os.Args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		text = string(data)
	}
	out, err := summarise(text)
	if err != nil {
		fmt.Fprintln(os.Stderr, "buildlog:", err)
		os.Exit(1)
	}
	fmt.Print(out)
}

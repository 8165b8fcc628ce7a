;; The program whose class loading languages/clj.toml's class data sharing archive records:
;; a MultiPL-E test (clojure.test, a failing and a passing assertion) around a little code.
(defn has_close_elements
  [numbers threshold]
  (some (fn [[a b]] (< (Math/abs (- a b)) threshold))
        (for [a numbers b numbers :when (not (identical? a b))] [a b])))

(require '[clojure.test :refer [deftest is run-test]])

(def candidate has_close_elements)

(deftest test-humaneval
  (is (= (boolean (candidate [1.0 2.0 3.9 4.0 5.0 2.2] 0.3)) true))
  (is (= (str (reduce + (map inc (range 10)))) "0")))

(run-test test-humaneval)

;; The program whose class loading languages/clj.toml's class data sharing archive records:
;; a MultiPL-E test (clojure.test: a passing assertion, a failing one and one that throws)
;; around a little code, then a form that does not compile, so that clojure.main's error
;; report is archived too (the JVM exits 1; the archive is still written).
(defn has_close_elements
  [numbers threshold]
  (some (fn [[a b]] (< (Math/abs (- a b)) threshold))
        (for [a numbers b numbers :when (not (identical? a b))] [a b])))

(defn wrong [s] (throw (Exception. (str "wrong " s))))

(require '[clojure.test :refer [deftest is run-test]])

(def candidate has_close_elements)

(deftest test-humaneval
  (is (= (boolean (candidate [1.0 2.0 3.9 4.0 5.0 2.2] 0.3)) true))
  (is (= (str (reduce + (map inc (range 10)))) "0"))
  (is (= (wrong "x") {:a [1 2] :b #{"c"}})))

(run-test test-humaneval)

(let [x] )

// The class-data archive's warm-up program (Dockerfile): what MultiPL-E's Scala programs do
// (the prompt's imports, collections, asserts that pass and one that fails, printing), then an
// uncaught exception, which the runner reports before it exits 1.
import scala.math._
import scala.collection.mutable._
object Warmup {
    def f(xs: List[Long]): Long = xs.map(x => max(x, 0l) * 2).sum
    def main(args: Array[String]): Unit = {
        assert(f(List[Long](1l, 2l)) == (6l));
        val m = HashMap[String, Long]("a" -> 1l)
        val b = ArrayBuffer[Long](3l, 1l, 2l)
        assert(b.sorted.toList == List(1l, 2l, 3l) && m("a") == 1l && "ab".reverse == "ba")
        assert(Array(1, 2).mkString(",") + f"${1.5}%.2f" + Some(1).getOrElse(0) == "1,21.501")
        println(Map(1 -> "a").toString + (1 to 3).toList + Set(1l) + Vector(1.0) + Option("s") + (1, "t"))
        try assert(f(List[Long](1l)) == (3l)) catch { case e: AssertionError => System.err.println(e) }
        throw new RuntimeException("warm-up")
    }
}
